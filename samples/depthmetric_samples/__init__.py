"""Real RGB-D samples for depthmetric's training application: 3 NYU Depth V2 pairs, 5 KITTI raw frames with
projected LiDAR, 2 TUM RGB-D pairs, laid out like the full data sets. Third-party data under their own terms
(non-commercial for NYU and KITTI): see this distribution's README.md (its metadata's description)."""
import pathlib

__all__ = ["DATA_DIR"]

DATA_DIR = pathlib.Path(__file__).resolve().parent  # nyu/, kitti/, tum/, each with its split files
