"""Event logs: the schema every dataset is validated against, and the loaders that produce one."""

from tfrs_youtube.data.schema import SCHEMA, TABLES, EventLog, SchemaError, empty_table, validate

__all__ = ["SCHEMA", "TABLES", "EventLog", "SchemaError", "empty_table", "validate"]
