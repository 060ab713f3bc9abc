"""Configuration: the schema (every key and its default, once), composition of config groups and overrides, the config
search path, the command-line grammar, validation, the --help text and the method registry. Imports only
ssl_bench.common and ssl_bench.errors (validation reads a dataset's class list lazily, the one exception the layers
contract names)."""
