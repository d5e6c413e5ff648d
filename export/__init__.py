"""viewrt subpackage."""
