"""A STAC API over the store's catalog: a pgstac index kept in step, served by stac-fastapi."""
