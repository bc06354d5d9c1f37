"""The processing grid and its tiles: pure geometry, no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from pyproj import CRS
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

DEFAULT_TILE_SIZE = 512


@dataclass(frozen=True)
class Tile:
    """One spatial tile of the grid; the unit of work and of resumability."""

    row: int
    """Tile row index (0 at the top)."""
    col: int
    """Tile column index (0 at the left)."""
    window: Window
    """Pixel window of the tile in the full grid."""

    @property
    def tile_id(self) -> str:
        """Stable id used in keys and logs, e.g. ``r002c013``."""
        return f"r{self.row:03d}c{self.col:03d}"


@dataclass(frozen=True)
class GridSpec:
    """A raster grid: CRS, affine transform of the upper-left corner, and shape (rows, cols)."""

    crs: str
    """CRS as ``EPSG:xxxx`` (or WKT when there is no EPSG code)."""
    transform: Affine
    """Affine transform of the grid (pixel corner convention)."""
    shape_yx: tuple[int, int]
    """Number of rows and columns."""

    @property
    def height(self) -> int:
        return self.shape_yx[0]

    @property
    def width(self) -> int:
        return self.shape_yx[1]

    @property
    def resolution_xy(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    @property
    def epsg(self) -> int | None:
        return CRS.from_user_input(self.crs).to_epsg()

    @property
    def is_geographic(self) -> bool:
        return bool(CRS.from_user_input(self.crs).is_geographic)

    def tiles(self, tile_size: int = DEFAULT_TILE_SIZE) -> list[Tile]:
        """Tiles of ``tile_size`` pixels, row-major; edge tiles are smaller."""
        return list(iter_tiles(self.shape_yx, tile_size))

    def tile_transform(self, window: Window) -> Affine:
        return window_transform(window, self.transform)

    def to_dict(self) -> dict[str, object]:
        return {
            "crs": self.crs,
            "transform": list(self.transform)[:6],
            "shape": list(self.shape_yx),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> GridSpec:
        t = [float(v) for v in d["transform"]]  # type: ignore[attr-defined]
        shape = d["shape"]
        return cls(str(d["crs"]), Affine(*t[:6]), (int(shape[0]), int(shape[1])))  # type: ignore[index]


def iter_tiles(shape_yx: tuple[int, int], tile_size: int) -> Iterator[Tile]:
    """Yield the tiles covering ``shape_yx`` row-major."""
    if tile_size < 16:
        raise ValueError(f"tile_size must be at least 16 pixels, got {tile_size}")
    height, width = shape_yx
    for r, row_off in enumerate(range(0, height, tile_size)):
        for c, col_off in enumerate(range(0, width, tile_size)):
            win = Window(
                col_off, row_off, min(tile_size, width - col_off), min(tile_size, height - row_off)
            )
            yield Tile(r, c, win)
