"""The committed gRPC stubs are exactly what the .proto generates."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["linkner_pb2.py", "linkner_pb2.pyi", "linkner_pb2_grpc.py"]


def test_stubs_are_not_stale(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    for name in GENERATED:
        fresh = (tmp_path / "protos" / "linkner" / "v1" / name).read_text()
        committed = (ROOT / "protos" / "linkner" / "v1" / name).read_text()
        assert fresh == committed, f"protos/linkner/v1/{name} is stale: run scripts/gen_protos.sh"


def test_service_shape():
    from protos.linkner.v1 import linkner_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["LinkNER"]
    assert service.full_name == "linkner.v1.LinkNER"
    assert [m.name for m in service.methods] == ["Recognize", "RecognizeBatch", "RecognizeStream", "Describe"]
    describe = service.methods_by_name["Describe"]
    assert describe.input_type.name == "DescribeRequest" and describe.output_type.name == "DescribeResponse"
    assert {f.name for f in describe.output_type.fields} >= {"model", "labels", "estimators", "llm_backend", "policy",
                                                             "calibration_status", "calibration"}
