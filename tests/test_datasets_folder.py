"""read_folder: images + captions CSV (several rows per image), and images without captions."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from xmodal.datasets import BadInputError, load_dataset, read_folder


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_csv_several_rows_per_image(tmp_path: Path) -> None:
    for name in ("dog.jpg", "cat.jpg", "unlisted.jpg"):
        _img(tmp_path / name)
    (tmp_path / "captions.csv").write_text(
        'image,caption\ndog.jpg,A dog runs .\ncat.jpg,"A cat, sleeping"\ndog.jpg,A brown dog .\n\n'
    )
    ds = read_folder(tmp_path)
    assert ds.ids == ["cat.jpg", "dog.jpg"]  # the CSV defines the records
    assert ds.records[0].captions == ("A cat, sleeping",)
    assert ds.records[1].captions == ("A dog runs .", "A brown dog .")
    assert ds.records[1].image == tmp_path / "dog.jpg"
    assert load_dataset(tmp_path).ids == ds.ids  # a folder without data.jsonl
    assert load_dataset(tmp_path / "captions.csv").ids == ds.ids  # the CSV itself


def test_kaggle_flickr_layout_and_other_delimiters(tmp_path: Path) -> None:
    _img(tmp_path / "Images" / "1.jpg")
    _img(tmp_path / "Images" / "2.jpg")
    (tmp_path / "captions.txt").write_text(
        "image_name| comment_number| comment\n1.jpg| 0| One .\n2.jpg| 0| Two .\n1.jpg| 1| Uno .\n"
    )
    ds = read_folder(tmp_path)
    assert ds.ids == ["Images/1.jpg", "Images/2.jpg"]  # ids relative to the folder read
    assert ds.records[0].captions == ("One .", "Uno .")  # space after "|" dropped


def test_bad_rows_name_the_line(tmp_path: Path) -> None:
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "b.jpg")
    csv = tmp_path / "captions.csv"
    csv.write_bytes(
        b"image,caption\n"
        b"a.jpg,first\n"  # 2
        b"a.jpg,  \n"  # 3 blank caption
        b"missing.jpg,nothing here\n"  # 4 missing image
        b"b.jpg,caf\xe9\n"  # 5 not UTF-8
        b"b.jpg\n"  # 6 too few columns
        b"b.jpg,fine\n"  # 7
    )
    with pytest.raises(BadInputError, match="not valid UTF-8") as e:
        read_folder(tmp_path)
    assert (e.value.path, e.value.line) == (csv, 5)
    ds = read_folder(tmp_path, on_bad="skip")
    assert ds.ids == ["a.jpg", "b.jpg"]
    assert ds.records[0].captions == ("first",) and ds.records[1].captions == ("fine",)
    lines = sorted(int(s.split(f"{csv}:")[1].split(":")[0]) for s in ds.skipped)
    assert lines == [3, 4, 5, 6]

    csv.write_text("image,caption\na.jpg,  \n")
    with pytest.raises(BadInputError, match="empty or whitespace-only") as e:
        read_folder(tmp_path)
    assert e.value.line == 2
    skipped = read_folder(tmp_path, on_bad="skip")
    assert len(skipped) == 0 and len(skipped.skipped) == 2  # the caption, then the record

    csv.write_text("file,words\na.jpg,x\n")
    with pytest.raises(BadInputError, match="no caption column"):
        read_folder(tmp_path)


def test_folder_without_captions(tmp_path: Path) -> None:
    _img(tmp_path / "b.png")
    _img(tmp_path / "a.JPG")
    _img(tmp_path / "sub" / "deeper" / "c.webp")
    _img(tmp_path / ".hidden" / "d.png")
    _img(tmp_path / ".e.png")
    (tmp_path / "notes.md").write_text("not an image")
    ds = read_folder(tmp_path)
    assert ds.ids == ["a.JPG", "b.png", "sub/deeper/c.webp"]
    assert all(r.captions == () and r.labels == () for r in ds.records)
    assert ds.captions()[0] == []

    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(BadInputError, match="not a readable image") as e:
        read_folder(tmp_path)
    assert e.value.path == tmp_path / "broken.png"
    ds = read_folder(tmp_path, on_bad="skip")
    assert len(ds) == 3 and len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    assert len(read_folder(tmp_path)) == 0
    with pytest.raises(BadInputError, match="folder not found"):
        read_folder(tmp_path / "nope")
