"""ftlcloud.pipeline."""
