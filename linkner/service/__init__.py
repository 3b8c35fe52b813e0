"""The service's logic without a serving framework: request shapes, validation, answers, config."""
