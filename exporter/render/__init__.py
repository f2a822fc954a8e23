"""`cachewarden render`: Prometheus rules and Grafana dashboards from templates and configured thresholds."""

from exporter.render.render import RenderedFile, render_all, stale_files, write_files

__all__ = ["RenderedFile", "render_all", "stale_files", "write_files"]
