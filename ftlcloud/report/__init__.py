"""ftlcloud.report."""
