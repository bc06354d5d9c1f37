"""ftlcloud.io."""
