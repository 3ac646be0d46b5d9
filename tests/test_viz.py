import numpy as np
import torch
from PIL import Image

from dart import DART
from dart.viz import draw_partition, main


def test_draw_partition_writes_a_png(tmp_path):
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4)
    scores = torch.ones(1, 4, 4)
    scores[0, 1, 2] = 20
    _, part = tok(torch.rand(1, 3, 64, 64), scores=scores, return_partition=True)
    out = tmp_path / "p.png"
    draw_partition(torch.rand(3, 64, 64), part, str(out), normalized=False)
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 100
    # the rectangles are drawn in yellow: some pixels are strongly yellow
    assert ((img[..., 0] > 200) & (img[..., 1] > 170) & (img[..., 2] < 80)).sum() > 50


def test_cli(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.rand(80, 80, 3) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "out.png"
    main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs",
          '{"img_size": 64, "num_tokens": 16, "scorer": "cnn", "depth": 1}', "--image", str(src), "--out", str(out)])
    assert Image.open(out).size[0] > 100
