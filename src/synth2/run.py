"""A run is a directory of stages.

    runs/<name>/
      config.yaml     the full resolved config
      manifest.json   stages done, their fingerprints, artifacts, timings
      <stage>/        one folder per stage: checkpoints/, metrics.jsonl, log.txt, outputs

A stage's fingerprint hashes its config section and its inputs' fingerprints. A
stage whose fingerprint is unchanged and that finished is skipped, so rerunning a
command resumes where it stopped; a stage that was interrupted is called again and
training stages pick up their last checkpoint. A changed fingerprint clears the
stage's folder, and every stage downstream of it reruns because its inputs changed.
The manifest keeps what each fingerprint hashed, so a config that differs only by
fields a newer synth2 added, at their defaults, keeps the stage (and the warning
for a real change names the keys that changed).

A stage has one writer at a time: the process that builds it holds `locks/<stage>.lock`. Several
processes may build different stages of one run at once (for example one VLM arm per GPU, or
the workers of `synth2 reproduce --jobs N`); their manifest updates are serialised by
`locks/manifest.lock`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from synth2.configtools import dump_yaml, to_dict
from synth2.errors import UserError
from synth2.files import atomic_write_text
from synth2.progress import ConsoleWarnings, console, is_rank_zero, warn

# Bump when a stage's outputs change meaning, so old runs recompute it.
STAGE_VERSION = 1
# How often a waiting worker looks whether the stage it needs is done (stages take seconds to hours).
WAIT_POLL_SECONDS = 0.5

logger = logging.getLogger("synth2")


@dataclass(frozen=True)
class StageResult:
    name: str
    fingerprint: str
    directory: Path
    artifacts: dict[str, Any]
    skipped: bool = False

    def __getitem__(self, key: str) -> Any:
        return self.artifacts[key]


def fingerprint(payload: Any) -> str:
    text = json.dumps(to_dict(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_json(value: Any) -> Any:
    """`value` as the manifest stores it (tuples as lists, mapping keys and paths as strings)."""
    return json.loads(json.dumps(to_dict(value), sort_keys=True, default=str))


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _only_added_defaults(new: Any, old: Any) -> bool:
    """Whether `new` (a stage's payload, dataclasses inside) equals `old` (the stored one) but for
    dataclass fields that `old` lacks and `new` holds at their defaults: fields added to synth2
    since the stage was built, which must leave what it builds as it was."""
    if dataclasses.is_dataclass(new):
        fields = {f.name: f for f in dataclasses.fields(new)}
        if not isinstance(old, dict) or not set(old) <= set(fields):
            return False
        return all(_only_added_defaults(getattr(new, name), old[name]) if name in old
                   else _as_json(getattr(new, name)) == _as_json(_default_of(field)) for name, field in fields.items())
    if isinstance(new, dict) and isinstance(old, dict):
        keys = {next(iter(_as_json({k: None}))): k for k in new}  # stored keys are strings
        return set(keys) == set(old) and all(_only_added_defaults(new[keys[k]], old[k]) for k in old)
    return _as_json(new) == old


def _changed_keys(new: Any, old: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two stored payloads."""
    if isinstance(new, dict) and isinstance(old, dict):
        return [key for k in sorted(set(new) | set(old)) for key in _changed_keys(new.get(k), old.get(k), f"{prefix}{k}.")]
    return [] if new == old else [prefix.rstrip(".")]


# stage locks this process holds, open until it exits (flock is per open file, so a second
# open of the same lock in this process would conflict with the first)
_HELD_LOCKS: dict[Path, Any] = {}


class Run:
    def __init__(self, root: str | Path, config: Any, wait_for_writers: bool = False):
        self.root = Path(root)
        self.config = config
        # A stage another process is writing stops this one at once (two commands building one
        # stage are a mistake to report), unless the processes are workers of one schedule,
        # which wait for each other's stages (`synth2.experiments.parallel`).
        self.wait_for_writers = wait_for_writers
        if is_rank_zero():
            self.root.mkdir(parents=True, exist_ok=True)
            dump_yaml(config, self.root / "config.yaml")

    # one writer per stage ------------------------------------------------------
    def lock_stage(self, name: str) -> None:
        """Hold `locks/<stage>.lock` (an exclusive `flock`) from this process's first write to the
        stage until the process exits: the kernel releases it however the process ends. A second
        writer of the stage stops at once, naming the holder; other stages stay free, and
        commands that only read (`report`, `arms`) take no lock."""
        holder = self._try_lock(name)
        if holder is not None:
            raise self._busy(name, holder)

    def _busy(self, name: str, holder: str) -> UserError:
        return UserError(f"{self.root}: another synth2 process (PID {holder}) is writing stage {name}; wait for it to finish or stop it")

    def _try_lock(self, name: str) -> str | None:
        """Take the stage's lock if it is free; else return the holder's PID as it wrote it."""
        path = (self.root / "locks" / f"{name}.lock").resolve()
        if path in _HELD_LOCKS or not is_rank_zero():
            return None  # this process writes the stage already (every Run object of it may write)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            return holder
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD_LOCKS[path] = handle
        return None

    def _claim(self, name: str, fp: str) -> dict | None:
        """Become the stage's writer, or with `wait_for_writers` wait until the process writing
        it has finished it; return the stage's manifest entry as it is then."""
        while True:
            holder = self._try_lock(name)
            entry = self.manifest()["stages"].get(name)  # as it is now: another process may have just finished it
            if holder is None or _finished(entry, fp):
                return entry
            if not self.wait_for_writers:
                raise self._busy(name, holder)
            time.sleep(WAIT_POLL_SECONDS)

    # manifest ----------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{self.manifest_path}: not a synth2 manifest ({error}); move it away to rebuild the run's stages") from error
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
            raise UserError(f"{self.manifest_path}: not a synth2 manifest (no \"stages\" object); move it away to rebuild the run's stages")
        return manifest

    def _write_manifest(self, manifest: dict) -> None:
        if is_rank_zero():
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")

    def _update_stage(self, name: str, **fields: Any) -> None:
        """Read, change and write the manifest under `locks/manifest.lock`, so that processes
        writing other stages of the run at the same time lose none of each other's entries."""
        lock = self.root / "locks" / "manifest.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # held for one read and one write; released on close
            manifest = self.manifest()
            manifest["stages"].setdefault(name, {}).update(fields)
            self._write_manifest(manifest)

    # Paths inside the run are stored as "{run}/<stage>/...", so a run directory can be moved,
    # copied to shared storage or opened from another working directory.
    def _relativise(self, value: Any) -> Any:
        return _map_strings(value, lambda s: RUN_PLACEHOLDER + s[len(str(self.root)) :] if _is_under(s, self.root) else s)

    def _expand(self, value: Any) -> Any:
        return _map_strings(value, lambda s: str(self.root) + s[len(RUN_PLACEHOLDER) :] if s.startswith(RUN_PLACEHOLDER + os.sep) else s)

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def done(self, name: str) -> StageResult | None:
        entry = self.manifest()["stages"].get(name)
        if entry and entry.get("status") == "done":
            return StageResult(name, entry["fingerprint"], self.stage_dir(name), self._expand(entry.get("artifacts", {})), True)
        return None

    # stages ------------------------------------------------------------------
    def stage(
        self,
        name: str,
        config: Any,
        inputs: list[StageResult],
        fn: Callable[[Path], dict[str, Any]],
    ) -> StageResult:
        """Run `fn(stage_dir) -> artifacts` unless an identical finished stage exists."""
        payload = {"stage": name, "version": STAGE_VERSION, "config": config, "inputs": {i.name: i.fingerprint for i in inputs}}
        fp = fingerprint(payload)
        directory = self.stage_dir(name)
        entry = self.manifest()["stages"].get(name)
        stored = None if entry and entry.get("fingerprint") == fp else _as_json(payload)  # only where they differ
        if stored is not None and entry and "payload" in entry and _only_added_defaults(payload, entry["payload"]):
            # the stage keeps its fingerprint, so the stages built on it keep theirs; the payload
            # kept is the newer one, which later changes are named against
            fp = entry["fingerprint"]
            if entry["payload"] != stored:
                self._update_stage(name, payload=stored)
        if not _finished(entry, fp):
            entry = self._claim(name, fp)
        if _finished(entry, fp):
            # debug: every stage re-resolves its inputs, so one step of a run would log each finished
            # upstream stage many times over into its log.txt
            logger.debug("stage %s: unchanged, skipped", name)
            if "payload" not in entry:  # built before manifests kept payloads
                self._update_stage(name, payload=stored or _as_json(payload))
            return StageResult(name, fp, directory, self._expand(entry.get("artifacts", {})), skipped=True)
        if entry and entry.get("fingerprint") != fp and directory.exists() and is_rank_zero():
            changed = _changed_keys(stored or _as_json(payload), entry["payload"]) if "payload" in entry else []
            what = f" ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})" if changed else ""
            warn(f"stage {name}: config or inputs changed{what}, recomputing (its old outputs are deleted)")
            shutil.rmtree(directory)
        resumed = bool(entry and entry.get("fingerprint") == fp)
        if is_rank_zero():
            directory.mkdir(parents=True, exist_ok=True)
        self._update_stage(name, fingerprint=fp, payload=stored or _as_json(payload), status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if is_rank_zero():  # other ranks read the manifest rank 0 has just marked "running"
            console.log(f"[bold]stage {name}[/bold]{' (resuming)' if resumed else ''}")
        start = time.time()
        with _stage_log(directory):
            artifacts = fn(directory)
        seconds = round(time.time() - start, 2)
        self._update_stage(
            name, status="done", seconds=seconds, artifacts=self._relativise(artifacts), finished=time.strftime("%Y-%m-%dT%H:%M:%S")
        )
        return StageResult(name, fp, directory, artifacts)


def _finished(entry: dict | None, fp: str) -> bool:
    return bool(entry) and entry.get("fingerprint") == fp and entry.get("status") == "done"


RUN_PLACEHOLDER = "{run}"


def _is_under(text: str, root: Path) -> bool:
    return text.startswith(str(root) + os.sep)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, (str, Path)):
        return fn(str(value))
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_strings(v, fn) for v in value]
    return value


class _stage_log:
    """Mirror the synth2 logger into `<stage>/log.txt` while the stage runs, its warnings also to the console."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.handlers: list[logging.Handler] = []

    def __enter__(self):
        if is_rank_zero():
            file = logging.FileHandler(self.directory / "log.txt")
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.handlers = [file, ConsoleWarnings()]
            for handler in self.handlers:
                logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        for handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
