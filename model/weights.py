"""Meta's official SAM checkpoints: where they live, their sha256, and a resumable download.

Nothing downloads at run time on its own: `heatprompt weights download sam_vit_b` is the
one explicit step, and every later load reads the local file and checks its hash.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model.errors import WeightsError
from model.hashing import sha256_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSpec:
    """One published checkpoint."""

    url: str
    filename: str
    sha256: str


_BASE = "https://dl.fbaipublicfiles.com/segment_anything"
OFFICIAL_WEIGHTS: dict[str, WeightsSpec] = {
    "sam_vit_b": WeightsSpec(
        url=f"{_BASE}/sam_vit_b_01ec64.pth",
        filename="sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "sam_vit_l": WeightsSpec(
        url=f"{_BASE}/sam_vit_l_0b3195.pth",
        filename="sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "sam_vit_h": WeightsSpec(
        url=f"{_BASE}/sam_vit_h_4b8939.pth",
        filename="sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
}


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest`, resuming a `.partial` file, and verify `sha256`.

    The file appears at `dest` only once complete and verified; a mismatch deletes the
    partial data. Raises WeightsError with a clear reason when the host cannot be reached.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    partial = dest.with_name(dest.name + ".partial")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete
            response = None
        else:
            raise WeightsError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"cannot download {url}: {reason}. Without network access, fetch the file on "
            f"another machine and pass its path with --sam-checkpoint"
        ) from exc
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                open(partial, "ab" if resumed else "wb") as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    if sha256 is not None:
        actual = sha256_file(partial)
        if actual != sha256:
            partial.unlink(missing_ok=True)
            raise WeightsError(
                f"{url}: sha256 mismatch (expected {sha256[:12]}…, got {actual[:12]}…); "
                "the partial download was removed, run the command again"
            )
    os.replace(partial, dest)
    return dest


def download_official(
    name: str, out_dir: Path, *, url: str | None = None, progress: bool = True
) -> Path:
    """Download one of `OFFICIAL_WEIGHTS` into `out_dir` (optionally from a mirror `url`)."""
    if name not in OFFICIAL_WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; choose one of {', '.join(OFFICIAL_WEIGHTS)}")
    spec = OFFICIAL_WEIGHTS[name]
    return download(
        url or spec.url, Path(out_dir) / spec.filename, sha256=spec.sha256, progress=progress
    )
