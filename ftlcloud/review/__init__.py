"""ftlcloud.review."""
