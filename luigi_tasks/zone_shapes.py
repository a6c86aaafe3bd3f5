"""Taxi zone ids of longitude/latitude points, from the TLC's zone shapes shipped in the package.

Yellow trips of 2009 and 2010 carry coordinates instead of zone ids. The TLC's shapefile (data/taxi_zones.zip: 263
polygons in NAD83 / New York Long Island, US feet, EPSG:2263) gives each point its `LocationID`.

Testing every point against the polygons costs about 6 µs a point (shapely's STRtree), several times a whole
conversion. So the zones are rasterised once per process into a grid of boxes, and the boxes that a zone boundary
crosses into a finer grid: a point whose box lies inside one zone (most points) or in none takes that answer from
an array lookup; only points in fine boxes that a boundary crosses are tested exactly, against the box's few
candidate zones. The answer is the same as testing every point: the grids only skip tests whose outcome they
already know.
"""

from __future__ import annotations

import functools
import io
import zipfile
from importlib import resources

import numpy as np

SHAPES = "taxi_zones.zip"
SHAPES_CRS = "EPSG:2263"
# Degrees of longitude and latitude: a cell is about 170 by 220 m, a sub-cell (a crossed cell split SPLIT x SPLIT
# ways) about 40 by 55 m.
CELL_DEGREES = 0.002
SPLIT = 4
_NONE, _SEVERAL = -1, -2  # cell markers: no zone touches the cell; a zone boundary crosses it


class _Grid:
    """Which zone covers each cell of a grid of boxes: a zone index, _NONE, or _SEVERAL with candidate zones."""

    def __init__(self, geometries: np.ndarray, boxes: np.ndarray, cells: np.ndarray, zones: np.ndarray) -> None:
        import shapely

        # (cells, zones): every pair of a box and a zone that intersect it.
        touching = np.bincount(cells, minlength=boxes.size)
        self.zone = np.full(boxes.size, _NONE, dtype=np.int32)
        self.zone[touching > 1] = _SEVERAL
        alone = touching[cells] == 1
        inside = shapely.covers(geometries[zones[alone]], boxes[cells[alone]])
        self.zone[cells[alone][inside]] = zones[alone][inside]
        self.zone[cells[alone][~inside]] = _SEVERAL  # one zone's edge crosses it
        crossed = self.zone[cells] == _SEVERAL
        # The candidates of each crossed cell, in zone order (the zone with the lowest LocationID wins a tie).
        order = np.lexsort((zones[crossed], cells[crossed]))
        self.candidate_cells, self.candidate_zones = cells[crossed][order], zones[crossed][order]

    def candidates(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item, zone) pairs: for each crossed cell asked about, its candidate zones."""
        first = np.searchsorted(self.candidate_cells, cell, side="left")
        count = np.searchsorted(self.candidate_cells, cell, side="right") - first
        item = np.repeat(np.arange(cell.size), count)
        pair = np.repeat(first - np.cumsum(count) + count, count) + np.arange(item.size)
        return item, self.candidate_zones[pair]


class ZoneShapes:
    """The zones and their grids; `zone_ids(longitude, latitude)` is the lookup."""

    def __init__(self, cell_degrees: float = CELL_DEGREES, split: int = SPLIT) -> None:
        import shapely

        self._shapely = shapely
        self.geometries, self.location_ids = _read_shapes()
        shapely.prepare(self.geometries)  # every test below is many boxes or points against the same polygons
        x0, y0, x1, y1 = shapely.total_bounds(self.geometries)
        self.cell, self.x0, self.y0, self.split = cell_degrees, x0, y0, split
        self.nx, self.ny = int((x1 - x0) // cell_degrees) + 1, int((y1 - y0) // cell_degrees) + 1
        boxes = self._boxes(np.arange(self.nx * self.ny), self.nx, self.x0, self.y0, cell_degrees)
        self.grid = _Grid(
            self.geometries, boxes, *shapely.STRtree(self.geometries).query(boxes, predicate="intersects")
        )
        # Crossed cells again, split SPLIT x SPLIT ways, each sub-cell tested against its cell's candidates only.
        crossed = np.flatnonzero(self.grid.zone == _SEVERAL)
        self.sub_index = np.full(self.grid.zone.size, -1, dtype=np.int64)
        self.sub_index[crossed] = np.arange(crossed.size)
        sub = np.arange(crossed.size * split * split)
        parent = crossed[sub // (split * split)]
        within = sub % (split * split)
        sub_x0 = x0 + (parent % self.nx) * cell_degrees + (within % split) * cell_degrees / split
        sub_y0 = y0 + (parent // self.nx) * cell_degrees + (within // split) * cell_degrees / split
        size = cell_degrees / split
        sub_boxes = shapely.box(sub_x0, sub_y0, sub_x0 + size, sub_y0 + size)
        item, zone = self.grid.candidates(parent)
        touches = shapely.intersects(self.geometries[zone], sub_boxes[item])
        self.sub_grid = _Grid(self.geometries, sub_boxes, item[touches], zone[touches])

    @staticmethod
    def _boxes(cell: np.ndarray, nx: int, x0: float, y0: float, size: float) -> np.ndarray:
        import shapely

        left, bottom = x0 + (cell % nx) * size, y0 + (cell // nx) * size
        return shapely.box(left, bottom, left + size, bottom + size)

    def zone_ids(self, longitude: np.ndarray, latitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The LocationID of each point (0 where none) and a mask of the points that had coordinates (not NaN or 0,
        which the TLC wrote for "unknown")."""
        known = np.isfinite(longitude) & np.isfinite(latitude) & (longitude != 0) & (latitude != 0)
        found = np.zeros(longitude.shape, dtype=np.int64)
        column = np.floor((longitude - self.x0) / self.cell)
        row = np.floor((latitude - self.y0) / self.cell)
        where = np.flatnonzero(known & (column >= 0) & (column < self.nx) & (row >= 0) & (row < self.ny))
        cell = row[where].astype(np.int64) * self.nx + column[where].astype(np.int64)
        zone = self.grid.zone[cell]
        whole = zone >= 0
        found[where[whole]] = self.location_ids[zone[whole]]
        crossed = zone == _SEVERAL
        where, cell = where[crossed], cell[crossed]
        x, y = longitude[where], latitude[where]
        sub_column = np.minimum(((x - self.x0) / self.cell - column[where]) * self.split, self.split - 1).astype(
            np.int64
        )
        sub_row = np.minimum(((y - self.y0) / self.cell - row[where]) * self.split, self.split - 1).astype(np.int64)
        sub = self.sub_index[cell] * self.split * self.split + sub_row * self.split + sub_column
        zone = self.sub_grid.zone[sub]
        whole = zone >= 0
        found[where[whole]] = self.location_ids[zone[whole]]
        crossed = np.flatnonzero(zone == _SEVERAL)
        if crossed.size:
            found[where[crossed]] = self._exact(sub[crossed], x[crossed], y[crossed])
        return found, known

    def _exact(self, sub: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points in crossed sub-cells, each tested against the sub-cell's candidate zones; 0 where none holds it."""
        point, zone = self.sub_grid.candidates(sub)
        hit = np.zeros(point.size, dtype=bool)
        for candidate in np.unique(zone):
            tested = zone == candidate
            hit[tested] = self._shapely.intersects_xy(self.geometries[candidate], x[point[tested]], y[point[tested]])
        found = np.zeros(sub.size, dtype=np.int64)
        # Pairs run in candidate order within each point: the first hit of a point is written last, so it stays.
        hits = np.flatnonzero(hit)[::-1]
        found[point[hits]] = self.location_ids[zone[hits]]
        return found


def _read_shapes() -> tuple[np.ndarray, np.ndarray]:
    """The polygons (shapely, EPSG:2263) and their LocationIDs, ordered by LocationID."""
    import pyproj
    import shapefile
    import shapely

    archive = zipfile.ZipFile(io.BytesIO(resources.files("luigi_tasks.data").joinpath(SHAPES).read_bytes()))
    members = {name.rsplit(".", 1)[1]: name for name in archive.namelist() if name.startswith("taxi_zones/taxi_zones.")}
    parts = {kind: io.BytesIO(archive.read(members[kind])) for kind in ("shp", "shx", "dbf")}
    with shapefile.Reader(**parts) as reader:
        pairs = [(shape_record.record["LocationID"], shapely.geometry.shape(shape_record.shape.__geo_interface__))
                 for shape_record in reader.iterShapeRecords()]  # fmt: skip
    pairs.sort(key=lambda pair: pair[0])
    feet = np.array([geometry for _, geometry in pairs], dtype=object)
    # Into longitude/latitude once, so that no trip point needs projecting: over a zone's edges (at most a few
    # kilometres) a straight line in feet and in degrees differ by less than a millimetre.
    to_degrees = pyproj.Transformer.from_crs(SHAPES_CRS, "EPSG:4326", always_xy=True)
    degrees = shapely.transform(feet, lambda xy: np.column_stack(to_degrees.transform(xy[:, 0], xy[:, 1])))
    return degrees, np.array([i for i, _ in pairs], dtype=np.int64)


@functools.cache
def zone_shapes() -> ZoneShapes:
    """The zones, built once per process (about a second) and only by a process that meets coordinates."""
    return ZoneShapes()
