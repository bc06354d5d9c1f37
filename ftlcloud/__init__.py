"""ftlcloud: semi-automatic iterative freeze-thaw landslide identification from InSAR.

Layers (imports only go downwards):

- ``ftlcloud.science``  pure numpy/xarray science: seasonal fit, terrain, NDVI, rules, masks,
  candidates, metrics. No storage, STAC or Dask imports.
- ``ftlcloud.io``       the store (local directory or S3), COG / GeoParquet writers, the STAC catalog,
  ingest of user inputs, the local SeaweedFS S3 server.
- ``ftlcloud.pipeline`` orchestration: clusters, tiles, factors once per run, iterations, the loop.
- ``ftlcloud.review``, ``ftlcloud.report``, ``ftlcloud.demo``: decisions, figures, the demo scene.
- ``ftlcloud.cli``      a thin click layer over the Python API.
"""

__version__ = "0.1.0"
