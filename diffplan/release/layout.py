"""Where release files live (DESIGN section 7): the release root, its folders, one model's files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_RELEASE_ROOT = Path("pretrained_models")
RELEASE_FOLDERS = ("grid", "graph", "continuous")
EVALUATION_FOLDER = "evaluation_results"


@dataclass(frozen=True)
class ReleasePaths:
    """Where one model's release files live: ``<root>/<folder>/<name>.ckpt``, ``<name>_info.json`` and
    ``configs/<name>_config.yaml``."""

    checkpoint: Path
    info: Path
    config: Path

    @classmethod
    def of(cls, spec, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> ReleasePaths:
        """The paths of manifest entry ``spec`` (anything with ``name`` and ``folder``)."""
        return cls.named(spec.name, spec.folder, release_root)

    @classmethod
    def named(cls, name: str, folder: str, release_root: str | Path = DEFAULT_RELEASE_ROOT) -> ReleasePaths:
        base = Path(release_root) / folder
        return cls(
            base / f"{name}.ckpt", base / f"{name}_info.json", base / "configs" / f"{name}_config.yaml"
        )

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return (self.checkpoint, self.info, self.config)

    def exist(self) -> bool:
        return all(path.is_file() for path in self.files)
