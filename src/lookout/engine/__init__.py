"""Event-time windows, panes, watermarks and emission. Pure: no I/O."""

from lookout.engine.core import Engine, EngineOutput
from lookout.engine.windows import WindowMath

__all__ = ["Engine", "EngineOutput", "WindowMath"]
