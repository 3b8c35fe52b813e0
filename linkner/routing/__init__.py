"""RDC routing: which spans go to the LLM (policies, calibration) and the linker that asks it."""
