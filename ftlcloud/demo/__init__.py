"""ftlcloud.demo."""
