"""ftlcloud.science."""
