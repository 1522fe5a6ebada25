"""Where results and data live: a local (or NFS) path, or object storage (s3://, gs://) through one pyarrow
filesystem, the one Ray Tune writes trial folders with (`RunConfig(storage_path, storage_filesystem)`).

    parse("results")                                   -> a local folder (resolved)
    parse("s3://bucket/sweeps")                        -> AWS S3 (credentials: the standard AWS variables and files)
    parse("s3://bucket/sweeps?endpoint_override=127.0.0.1:9000&scheme=http")   -> an S3-compatible server
    parse("gs://bucket/sweeps")                        -> Google Cloud Storage

`AWS_ENDPOINT_URL` points s3:// at an S3-compatible server too (pyarrow reads it). Credentials never go into a URI
(one is refused) and pyarrow never pickles them: a worker node resolves its own from its environment.

A `Store` is a path on such a filesystem with the little of pathlib a sweep needs (`/`, name, parent, read/write,
listing, removal). Reading does not trust what it reads: callers parse JSON, CSV and YAML as data.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import urllib.parse
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

_TIMEOUTS = {"connect_timeout": 5.0, "request_timeout": 30.0}  # an endpoint that does not answer: seconds, not minutes


class StorageError(ValueError):
    """A location that cannot be used: printed as one `error:` line naming it."""


def is_remote(location: str | os.PathLike) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def parse(location: str | os.PathLike) -> Store:
    """The Store at `location` (a path, or a URI with a scheme pyarrow knows); StorageError for a scheme pyarrow does
    not know or a URI with credentials in it. Nothing is read or written."""
    text = str(location)
    if not is_remote(text):
        path = Path(text.removeprefix("file://")).expanduser().resolve()
        return Store(pafs.LocalFileSystem(), str(path), "")
    parts = urllib.parse.urlsplit(text)
    if parts.username or parts.password:
        raise StorageError(f"{_redact(text)}: credentials do not belong in a URI (use the AWS or GCP variables)")
    scheme = parts.scheme.lower()
    query = dict(urllib.parse.parse_qsl(parts.query))
    try:
        if scheme == "s3":
            known = {"endpoint_override", "scheme", "region", "allow_bucket_creation"}
            if set(query) - known:
                unknown = ", ".join(sorted(set(query) - known))
                raise StorageError(f"{text}: unknown option(s) {unknown} (known: {', '.join(sorted(known))})")
            options = {k: v for k, v in query.items() if k != "allow_bucket_creation"}
            fs = pafs.S3FileSystem(**options, **_TIMEOUTS, retry_strategy=pafs.AwsStandardS3RetryStrategy(3))
            path = f"{parts.netloc}{parts.path}".rstrip("/")
        else:
            fs, path = pafs.FileSystem.from_uri(text)
            path = path.rstrip("/")
    except pyarrow.ArrowInvalid as e:
        raise StorageError(f"{text}: {str(e).splitlines()[0]}") from None
    except (pyarrow.ArrowException, OSError, TypeError) as e:
        raise StorageError(f"{text}: {_first_line(e)}") from None
    if not path:
        raise StorageError(f"{text}: no bucket in the URI")
    return Store(fs, path, "gs" if scheme == "gcs" else scheme, query)


def _redact(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname or "")) if parts.password else uri


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text or type(e).__name__)[:240]


class Store:
    """A file or folder on a pyarrow filesystem; on object storage a "folder" is a key prefix."""

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = "", query: dict | None = None):
        self.fs, self.path, self.scheme, self.query = fs, path, scheme, dict(query or {})

    @classmethod
    def on(cls, fs: pafs.FileSystem, path: str) -> Store:
        """`path` on `fs` (e.g. where Ray Tune's StorageContext names a trial folder)."""
        return cls(fs, path, {"local": "", "gcs": "gs"}.get(fs.type_name, fs.type_name))

    # --- names
    @property
    def remote(self) -> bool:
        return bool(self.scheme)

    def __truediv__(self, name: str) -> Store:
        return Store(self.fs, f"{self.path.rstrip('/')}/{name}", self.scheme, self.query)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]

    @property
    def parent(self) -> Store:
        return Store(self.fs, self.path.rstrip("/").rpartition("/")[0] or "/", self.scheme, self.query)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def __str__(self) -> str:
        return self.path if not self.remote else f"{self.scheme}://{self.path}"

    def __fspath__(self) -> str:
        """The local path (open(), pandas, Path() take a local Store); refused for object storage, whose code paths
        go through the filesystem instead."""
        return str(self.local())

    def __repr__(self) -> str:
        return f"Store({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and (self.scheme, self.path) == (other.scheme, other.path)

    def __hash__(self) -> int:
        return hash((self.scheme, self.path))

    def __lt__(self, other: Store) -> bool:
        return self.path < other.path

    def local(self) -> Path:
        """This place as a local path (only for local storage)."""
        if self.remote:
            raise StorageError(f"{self}: not a local path")
        return Path(self.path)

    # --- what is there
    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def mtime(self) -> float:
        info = self.fs.get_file_info(self.path)
        return info.mtime.timestamp() if info.mtime else 0.0

    def children(self, prefix: str = "") -> list[Store]:
        """What is directly in this folder whose name starts with `prefix`, in name order ([] where there is none)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(Store(self.fs, i.path, self.scheme, self.query) for i in infos if i.base_name.startswith(prefix))

    def glob(self, pattern: str) -> list[Store]:
        """What is directly in this folder whose name matches `pattern` (fnmatch), in name order."""
        return [c for c in self.children() if fnmatch.fnmatchcase(c.name, pattern)]

    def files(self) -> list[tuple[str, pafs.FileInfo]]:
        """(path relative to this folder, info) of every file under it, at any depth."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        root = self.path.rstrip("/") + "/"
        return sorted((i.path.removeprefix(root), i) for i in infos if i.type == pafs.FileType.File)

    # --- reading and writing
    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            if not self.exists():
                raise FileNotFoundError(str(self)) from None
            raise OSError(_first_line(e)) from None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Whole-object writes (object storage has no partial ones); on a local disk written aside and renamed."""
        if not self.remote:
            path = self.local()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)

    # --- between here and a local disk
    def download(self, dest: Path) -> Path:
        """A local copy of this folder at `dest` (the folder itself, where it is local already)."""
        if not self.remote:
            return self.local()
        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path, str(dest), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return dest

    def as_local(self, scratch: Path) -> Path:
        """This file as a local path: itself, or (object storage) a copy in the local folder `scratch`."""
        if not self.remote:
            return self.local()
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / self.name).write_bytes(self.read_bytes())
        return scratch / self.name

    def upload(self, src: Path) -> None:
        """Copy the local file or folder `src` here."""
        if not self.remote:
            if Path(src).is_dir():
                shutil.copytree(src, self.local(), dirs_exist_ok=True)
            else:
                self.write_bytes(Path(src).read_bytes())
            return
        pafs.copy_files(str(src), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    # --- is it usable at all
    def check(self, what: str) -> None:
        """One StorageError (naming `what`, e.g. --results, and the location) where this place cannot be used: an
        endpoint that does not answer, a bucket that does not exist, refused credentials, a file where a folder
        should be. Reads only."""
        try:
            if self.remote:
                bucket = self.path.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(f"{what} {self}: bucket {bucket!r} does not exist")
            if self._type() == pafs.FileType.File:
                raise StorageError(f"{what} {self}: is a file, not a folder")
        except StorageError:
            raise
        except (OSError, pyarrow.ArrowException) as e:
            raise StorageError(f"{what} {self}: {explain(e)}") from None


def explain(e: BaseException) -> str:
    """The reason in pyarrow's (AWS SDK's) words, shortened to what a user acts on."""
    text = _first_line(e)
    for marker, why in (
        ("NETWORK_CONNECTION", "the storage endpoint does not answer"),
        ("ACCESS_DENIED", "access denied: the credentials were refused"),
        ("INVALID_ACCESS_KEY_ID", "the credentials were refused (unknown access key)"),
        ("SIGNATURE_DOES_NOT_MATCH", "the credentials were refused (wrong secret key)"),
        ("Forbidden", "access denied: the credentials were refused"),
    ):
        if marker in text:
            return f"{why} ({text[:160]})"
    return text
