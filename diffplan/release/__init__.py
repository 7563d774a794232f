"""Release machinery: manifest schema, checkpoint + metadata I/O, validation checks, packaging."""
