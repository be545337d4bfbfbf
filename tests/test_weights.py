"""affectsr.weights: naming a weights file by its content."""
import hashlib
import shutil

from affectsr.weights import WEIGHTS_DIR, file_sha256, shipped_name, shipped_names


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"x" * (3 << 20) + b"tail")  # more than one 1 MB chunk
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_shipped_name_finds_a_copy_by_content_only(tmp_path):
    name = shipped_names("fer-")[0]
    copy = tmp_path / "renamed.safetensors"
    shutil.copyfile(WEIGHTS_DIR / f"{name}.safetensors", copy)
    assert shipped_name(copy, "fer-") == name
    changed = bytearray(copy.read_bytes())
    changed[-1] ^= 1
    copy.write_bytes(bytes(changed))
    assert shipped_name(copy, "fer-") is None
