r"""`python -m input_pipeline.show`: a PNG grid of patches (image/show.py).

  python -m input_pipeline.show --source='$SID_SHARED_DIR/images/city.jpg' \
      --out=patches.png --patch_size=32 --num=64 --seed=0
"""

import sys

from input_pipeline.image import show

if __name__ == "__main__":
  show.main(sys.argv)
