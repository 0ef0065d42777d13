"""Video arrays and files for the measurement layer: ``sol.video`` (runtime layer), re-exported.

The CLI writes videos on a no-extras install, so the code lives in the runtime layer; metrics,
the gate, the VBench adapter and the report import it from here as before.

>>> import numpy as np
>>> to_uint8(np.zeros((5, 16, 16, 3), np.float32)).dtype
dtype('uint8')
"""

from sol.video import VideoLike, check_video, frame_strip, load_video, read_mp4, to_uint8, write_mp4

__all__ = ["VideoLike", "check_video", "frame_strip", "load_video", "read_mp4", "to_uint8", "write_mp4"]
