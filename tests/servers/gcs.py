#!/usr/bin/env python3
"""A Google Cloud Storage test server, for this project's tests only.

It implements only the requests that `object_store`'s GCS client (0.14, pointed at it with
`google_base_url`) and Polars send, and answers them as Google Cloud Storage does:

* the XML API: upload (`PUT`, with `x-goog-if-generation-match` preconditions checked and applied
  atomically), download and metadata (`GET`/`HEAD`, with byte ranges and conditional headers), delete,
  copy (`x-goog-copy-source`), list (V2, `list-type=2`, and V1) and multipart uploads (initiate, upload a
  part, complete, abort);
* the JSON API for buckets: create (`POST /storage/v1/b?project=...`), get, list, delete, and patch of
  `versioning` (`PATCH /storage/v1/b/<bucket>` with `{"versioning": {"enabled": true|false}}`, answered
  with the bucket resource; also accepted on create; off by default; shown by get and list);
* Object Versioning and generations: each write of an object makes a new generation (`x-goog-generation`,
  answered on upload, download and metadata). In a bucket with versioning on, an overwrite or a delete of
  the live object keeps its generation as a noncurrent version; with it off, an overwrite or a delete
  removes it. `GET`/`HEAD` with `?generation=N` serve that generation, live or noncurrent, with its own
  headers, conditional headers and ranges applied to it (`404 NoSuchKey` if it does not exist, `400
  InvalidArgument` if N is not a positive integer), on signed URLs too (`generation` is part of their
  canonical query, as every parameter is); `DELETE` with `?generation=N` deletes that generation only;
  copy reads `x-goog-copy-source-generation`. Listings show live objects only (listing versions is not
  implemented), and a bucket with noncurrent versions is not empty;
* authorization: every request carries `Authorization: Bearer <JWT>`, the self-signed RS256 JWT
  `object_store` makes from a service account key, verified with the account's public key and refused
  once expired; or it is a V4 signed URL (`GOOG4-RSA-SHA256`), whose signature is verified with the
  same key over the canonical request rebuilt from the request as received (method, path, query, signed
  headers such as `Host`), and which is refused once expired.

Buckets (with their versioning) and objects (with their noncurrent generations) live on disk under
`--root`, so that a server killed and started again with the same root serves the same data. Each
generation is one data file plus one JSON metadata file, both written atomically (a temporary file renamed
into place). One lock makes each conditional write atomic: of many racing create-only writes of one name
exactly one succeeds.

Run it as:

    python tests/servers/gcs.py --host 127.0.0.1 --port 0 --root DIR \\
        --public-key tests/fixtures/gcs/service-account.pub.pem [--client-email EMAIL] [--verbose]

Once listening it prints one line, `GCS test server listening on http://HOST:PORT`, then serves until
killed. It is quiet otherwise, unless `--verbose` (one line per request on stderr). Standard library and
`cryptography` only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import datetime as dt
import email.utils
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CHUNK = 1 << 20
# Google's limits.
MAX_KEYS = 1000
MAX_NAME_BYTES = 1024
MAX_SIGNED_URL_SECONDS = 604800
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10000
# How much of an unread request body is read and dropped to keep the connection; beyond it, it is closed.
MAX_DRAIN = 1 << 30
# How far in the future a signed URL's X-Goog-Date may be (clock skew).
MAX_SKEW_SECONDS = 900
SIGNING_ALGORITHM = "GOOG4-RSA-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>"
S3_NAMESPACE = "http://doc.s3.amazonaws.com/2006-03-01"
# The object headers stored at upload and given back on download (besides Content-Type).
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
PART_FILE = re.compile(r"^(\d{1,5})\.([0-9a-f]{32})\.part$")
# An object's metadata file: `<h>.json` for its live generation, `<h>.<generation>.json` for a noncurrent one.
META_FILE = re.compile(r"^([0-9a-f]{64})(?:\.(\d{1,19}))?\.json$")
MAX_GENERATION = (1 << 63) - 1
HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
# Characters XML 1.0 does not allow (nor as character references): refused in object names.
XML_FORBIDDEN = re.compile("[\x00\ufffe\uffff\r\n]")
# Characters written as character references in XML text.
XML_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
STRICT_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class GcsError(Exception):
    """An error answered to the client: an XML error body (or a JSON one on the JSON API)."""

    def __init__(self, status, code, message, details=None, headers=None, close=False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or []
        self.close = close


def bad_request(message, code="InvalidArgument", close=False):
    return GcsError(400, code, message, close=close)


# ---------------------------------------------------------------------------------------------------------
# Encodings and formats


def strict_encode(text):
    """Percent-encodes every byte of `text` (UTF-8) but A-Z a-z 0-9 - . _ ~, with uppercase hex."""
    return "".join(chr(b) if b in STRICT_SAFE else "%%%02X" % b for b in text.encode("utf-8"))


def xml_text(text):
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return XML_CONTROL.sub(lambda m: "&#%d;" % ord(m.group()), text)


def http_date(micros):
    return email.utils.formatdate(micros // 1_000_000, usegmt=True)


def iso_millis(micros):
    stamp = dt.datetime.fromtimestamp(micros // 1_000_000, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (micros % 1_000_000 // 1000)


def b64url_decode(text):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def error_xml(code, message, details=()):
    extra = "".join("<%s>%s</%s>" % (name, xml_text(value), name) for name, value in details)
    return (
        "%s<Error><Code>%s</Code><Message>%s</Message>%s</Error>"
        % (XML_DECLARATION, xml_text(code), xml_text(message), extra)
    ).encode("utf-8")


def error_json(status, code, message):
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": code}],
        }
    }
    return json.dumps(body).encode("utf-8")


def quoted(etag):
    return '"%s"' % etag


def unquote_etag(etag):
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        etag = etag[1:-1]
    return etag


def parse_http_date(value):
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp())


def write_atomically(path, data, tmp_dir):
    fd, tmp = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_generation(text):
    """The generation `text` names: a positive integer (64 bits); else None."""
    text = text.strip()
    if not re.fullmatch(r"\d{1,19}", text) or not 0 < int(text) <= MAX_GENERATION:
        return None
    return int(text)


def check_object_name(name):
    if not name:
        raise bad_request("The object name is empty.", "InvalidObjectName")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise bad_request("The object name is longer than 1024 bytes.", "InvalidObjectName")
    if name in (".", ".."):
        raise bad_request("The object name cannot be . or ..", "InvalidObjectName")
    if XML_FORBIDDEN.search(name):
        raise bad_request(
            "The object name contains a carriage return, line feed or character XML cannot carry.",
            "InvalidObjectName",
        )


# ---------------------------------------------------------------------------------------------------------
# Storage


class ObjectMeta:
    __slots__ = (
        "name", "generation", "size", "md5", "etag", "content_type", "attrs", "updated", "data_path",
        "meta_path",
    )

    def to_json(self):
        return {
            "name": self.name,
            "generation": self.generation,
            "metageneration": 1,
            "size": self.size,
            "md5": self.md5,
            "etag": self.etag,
            "content_type": self.content_type,
            "attrs": self.attrs,
            "updated_us": self.updated,
        }


class Upload:
    __slots__ = ("upload_id", "bucket", "name", "content_type", "attrs", "parts", "directory")


class Bucket:
    """A bucket: its settings, its live objects by name (`keys`: their names, sorted) and its noncurrent
    generations (name -> generation -> ObjectMeta)."""

    __slots__ = ("name", "created", "updated", "metageneration", "versioning", "objects", "keys", "noncurrent",
                 "directory")

    def __init__(self, name, created, directory, versioning=False, metageneration=1, updated=None):
        self.name = name
        self.created = created
        self.updated = created if updated is None else updated
        self.metageneration = metageneration
        self.versioning = versioning
        self.objects = {}
        self.keys = []
        self.noncurrent = {}
        self.directory = directory

    def to_json(self):
        return {
            "name": self.name,
            "created_us": self.created,
            "updated_us": self.updated,
            "metageneration": self.metageneration,
            "versioning": self.versioning,
        }


class Store:
    """Buckets, objects and multipart uploads on disk under `root`, with an in-memory index.

    Layout: `buckets/<bucket>/bucket.json`; `buckets/<bucket>/objects/<h[:2]>/<h>.json` (the metadata
    of the live generation of the object whose name hashes (SHA-256) to h), `<h>.<generation>.json` (the
    metadata of a noncurrent generation) and `<h>.<generation>.data` (a generation's bytes);
    `uploads/<id>/upload.json` and `uploads/<id>/<part number>.<md5>.part`; `tmp/` for files being
    written. Metadata is renamed into place after the data it names, and a generation made noncurrent gets
    its noncurrent metadata before it loses its live one, so a crash leaves at worst an unreferenced data
    file, removed at start-up, or a generation both live and noncurrent, live at start-up.
    """

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.buckets_dir = os.path.join(self.root, "buckets")
        self.uploads_dir = os.path.join(self.root, "uploads")
        self.tmp_dir = os.path.join(self.root, "tmp")
        for directory in (self.root, self.buckets_dir, self.uploads_dir):
            os.makedirs(directory, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.lock = threading.Lock()
        self.buckets = {}
        self.uploads = {}
        # Completed and aborted uploads (this run): a retried complete or abort gets the same answer.
        self.completed = {}
        self.aborted = set()
        self.last_generation = 0
        self._load()

    # -- start-up

    def _load(self):
        for bucket_name in sorted(os.listdir(self.buckets_dir)):
            directory = os.path.join(self.buckets_dir, bucket_name)
            try:
                with open(os.path.join(directory, "bucket.json"), "rb") as f:
                    info = json.load(f)
                created = int(info.get("created_us", 0))
                bucket = Bucket(
                    bucket_name, created, directory, versioning=info.get("versioning") is True,
                    metageneration=int(info.get("metageneration", 1)), updated=int(info.get("updated_us", created)),
                )
            except (OSError, ValueError, TypeError):
                continue
            self.buckets[bucket_name] = bucket
            objects_dir = os.path.join(directory, "objects")
            if not os.path.isdir(objects_dir):
                continue
            for shard in os.listdir(objects_dir):
                shard_dir = os.path.join(objects_dir, shard)
                files = set(os.listdir(shard_dir))
                referenced = set()
                noncurrent = []
                for file_name in sorted(files):
                    match = META_FILE.match(file_name)
                    if not match:
                        continue
                    meta = self._read_meta(shard_dir, file_name, match.group(1))
                    if meta is None:
                        continue
                    if match.group(2) is not None:
                        noncurrent.append(meta)
                        continue
                    referenced.add(os.path.basename(meta.data_path))
                    bucket.objects[meta.name] = meta
                    self.last_generation = max(self.last_generation, meta.generation)
                for meta in noncurrent:
                    live = bucket.objects.get(meta.name)
                    if live is not None and live.generation == meta.generation:
                        # Made noncurrent by a write or delete that did not finish: it is still live.
                        try:
                            os.unlink(meta.meta_path)
                        except OSError:
                            pass
                        continue
                    referenced.add(os.path.basename(meta.data_path))
                    bucket.noncurrent.setdefault(meta.name, {})[meta.generation] = meta
                    self.last_generation = max(self.last_generation, meta.generation)
                for file_name in files:
                    if file_name.endswith(".data") and file_name not in referenced:
                        try:
                            os.unlink(os.path.join(shard_dir, file_name))
                        except OSError:
                            pass
            bucket.keys = sorted(bucket.objects)
        for upload_id in os.listdir(self.uploads_dir):
            directory = os.path.join(self.uploads_dir, upload_id)
            try:
                with open(os.path.join(directory, "upload.json"), "rb") as f:
                    info = json.load(f)
            except (OSError, ValueError):
                shutil.rmtree(directory, ignore_errors=True)
                continue
            upload = Upload()
            upload.upload_id = upload_id
            upload.bucket = info["bucket"]
            upload.name = info["name"]
            upload.content_type = info["content_type"]
            upload.attrs = info["attrs"]
            upload.directory = directory
            upload.parts = {}
            # A part uploaded twice: the later one (a crash may have left both).
            newest = {}
            for file_name in os.listdir(directory):
                match = PART_FILE.match(file_name)
                if not match:
                    continue
                path = os.path.join(directory, file_name)
                number = int(match.group(1))
                stat = os.stat(path)
                if number in newest:
                    if newest[number] >= stat.st_mtime_ns:
                        os.unlink(path)
                        continue
                    os.unlink(upload.parts[number][0])
                newest[number] = stat.st_mtime_ns
                upload.parts[number] = (path, stat.st_size, match.group(2))
            self.uploads[upload_id] = upload

    def _read_meta(self, shard_dir, file_name, digest):
        try:
            with open(os.path.join(shard_dir, file_name), "rb") as f:
                info = json.load(f)
            meta = ObjectMeta()
            meta.name = info["name"]
            meta.generation = int(info["generation"])
            meta.size = int(info["size"])
            meta.md5 = info["md5"]
            meta.etag = info["etag"]
            meta.content_type = info["content_type"]
            meta.attrs = dict(info.get("attrs") or {})
            meta.updated = int(info["updated_us"])
            meta.meta_path = os.path.join(shard_dir, file_name)
            meta.data_path = self._data_path(shard_dir, digest, meta.generation)
            if os.path.getsize(meta.data_path) != meta.size:
                return None
            return meta
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- paths

    @staticmethod
    def _data_path(shard_dir, digest, generation):
        return os.path.join(shard_dir, "%s.%d.data" % (digest, generation))

    def _object_paths(self, bucket, name, generation):
        """(shard folder, live metadata path, data path of `generation`) of the object `name`."""
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        shard_dir = os.path.join(bucket.directory, "objects", digest[:2])
        return shard_dir, os.path.join(shard_dir, digest + ".json"), self._data_path(shard_dir, digest, generation)

    @staticmethod
    def _noncurrent_meta_path(meta):
        """Where the metadata of `meta`'s generation goes once it is noncurrent."""
        shard_dir = os.path.dirname(meta.data_path)
        digest = os.path.basename(meta.data_path).split(".", 1)[0]
        return os.path.join(shard_dir, "%s.%d.json" % (digest, meta.generation))

    def new_temp(self):
        fd, path = tempfile.mkstemp(dir=self.tmp_dir)
        return os.fdopen(fd, "wb"), path

    # -- buckets

    def _write_bucket(self, bucket):
        write_atomically(
            os.path.join(bucket.directory, "bucket.json"), json.dumps(bucket.to_json()).encode(), self.tmp_dir
        )

    def create_bucket(self, name, versioning=False):
        """The new bucket `name`, or None if it exists."""
        with self.lock:
            if name in self.buckets:
                return None
            directory = os.path.join(self.buckets_dir, name)
            os.makedirs(os.path.join(directory, "objects"), exist_ok=True)
            bucket = Bucket(name, time.time_ns() // 1000, directory, versioning=versioning)
            self._write_bucket(bucket)
            self.buckets[name] = bucket
            return bucket

    def patch_bucket(self, name, versioning, metageneration_match=None):
        """Turns the bucket's versioning on or off (None: as it is), durably, and counts a metageneration, if
        its metageneration is `metageneration_match` (when given); the bucket."""
        with self.lock:
            bucket = self.buckets.get(name)
            if bucket is None:
                raise GcsError(404, "notFound", "The specified bucket does not exist.")
            if metageneration_match is not None and metageneration_match != bucket.metageneration:
                raise GcsError(412, "conditionNotMet", "Precondition Failed")
            if versioning is None:
                versioning = bucket.versioning
            changed = Bucket(name, bucket.created, bucket.directory, versioning=versioning,
                             metageneration=bucket.metageneration + 1, updated=time.time_ns() // 1000)
            self._write_bucket(changed)
            bucket.versioning = changed.versioning
            bucket.metageneration = changed.metageneration
            bucket.updated = changed.updated
            return bucket

    def get_bucket(self, name):
        with self.lock:
            return self.buckets.get(name)

    def delete_bucket(self, name):
        with self.lock:
            bucket = self.buckets.get(name)
            if bucket is None:
                raise GcsError(404, "notFound", "The specified bucket does not exist.")
            if bucket.objects or bucket.noncurrent:
                raise GcsError(409, "conflict", "The bucket you tried to delete is not empty.")
            os.unlink(os.path.join(bucket.directory, "bucket.json"))
            shutil.rmtree(bucket.directory, ignore_errors=True)
            del self.buckets[name]

    def list_buckets(self):
        with self.lock:
            return sorted(self.buckets.values(), key=lambda b: b.name)

    # -- objects

    def _bucket(self, name):
        bucket = self.buckets.get(name)
        if bucket is None:
            raise GcsError(404, "NoSuchBucket", "The specified bucket does not exist.")
        return bucket

    def _next_generation(self):
        now = time.time_ns() // 1000
        self.last_generation = max(now, self.last_generation + 1)
        return self.last_generation, now

    @staticmethod
    def _check_preconditions(meta, conditions):
        """`conditions`: generation (0: must not exist) and metageneration to match, or None."""
        generation, metageneration = conditions
        if generation is not None:
            if generation == 0:
                if meta is not None:
                    raise GcsError(
                        412, "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold.",
                        details=[("Details", "The object already exists (x-goog-if-generation-match: 0).")],
                    )
            elif meta is None or meta.generation != generation:
                raise GcsError(
                    412, "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold.",
                    details=[("Details", "The object's generation is not %d." % generation)],
                )
        if metageneration is not None and (meta is None or metageneration != 1):
            raise GcsError(
                412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold."
            )

    def check_bucket(self, bucket_name):
        with self.lock:
            self._bucket(bucket_name)

    def commit(self, bucket_name, name, tmp_path, size, md5, etag, content_type, attrs, conditions,
               upload_id=None):
        """Makes the file at `tmp_path` the object `name`, if `conditions` hold: atomically."""
        with self.lock:
            try:
                bucket = self._bucket(bucket_name)
                old = bucket.objects.get(name)
                self._check_preconditions(old, conditions)
                if upload_id is not None:
                    upload = self.uploads.get(upload_id)
                    if upload is None:
                        raise GcsError(404, "NoSuchUpload", "The requested upload was not found.")
            except GcsError:
                os.unlink(tmp_path)
                raise
            generation, updated = self._next_generation()
            shard_dir, meta_path, data_path = self._object_paths(bucket, name, generation)
            os.makedirs(shard_dir, exist_ok=True)
            os.replace(tmp_path, data_path)
            meta = ObjectMeta()
            meta.name = name
            meta.generation = generation
            meta.size = size
            meta.md5 = md5
            meta.etag = etag
            meta.content_type = content_type
            meta.attrs = attrs
            meta.updated = updated
            meta.data_path = data_path
            meta.meta_path = meta_path
            if old is not None and bucket.versioning:
                self._retire(bucket, old)
            write_atomically(meta_path, json.dumps(meta.to_json()).encode("utf-8"), self.tmp_dir)
            if old is None:
                bisect.insort(bucket.keys, name)
            elif not bucket.versioning and old.data_path != data_path:
                try:
                    os.unlink(old.data_path)
                except OSError:
                    pass
            bucket.objects[name] = meta
            if upload_id is not None:
                upload = self.uploads.pop(upload_id)
                shutil.rmtree(upload.directory, ignore_errors=True)
                self.completed[upload_id] = (bucket_name, name, meta)
            return meta

    def _retire(self, bucket, meta):
        """Keeps the live generation `meta` as a noncurrent one: its noncurrent metadata written (before
        the caller replaces or removes its live metadata)."""
        path = self._noncurrent_meta_path(meta)
        write_atomically(path, json.dumps(meta.to_json()).encode("utf-8"), self.tmp_dir)
        meta.meta_path = path
        bucket.noncurrent.setdefault(meta.name, {})[meta.generation] = meta

    @staticmethod
    def _generation(bucket, name, generation):
        """The metadata of the object's live generation (`generation` None) or of `generation`, live or
        noncurrent; raises 404."""
        meta = bucket.objects.get(name)
        if generation is not None and (meta is None or meta.generation != generation):
            meta = bucket.noncurrent.get(name, {}).get(generation)
        if meta is None:
            raise GcsError(404, "NoSuchKey", "The specified key does not exist.")
        return meta

    def open_object(self, bucket_name, name, generation=None):
        """The metadata of the object's live generation (or of `generation`, live or noncurrent) and its
        data file opened (so that a later overwrite or delete cannot change it)."""
        with self.lock:
            meta = self._generation(self._bucket(bucket_name), name, generation)
            return meta, open(meta.data_path, "rb")

    def delete_object(self, bucket_name, name, generation, conditions):
        """Deletes the live object (kept as a noncurrent generation when the bucket's versioning is on), or
        the one `generation` given, live or noncurrent, for good."""
        with self.lock:
            bucket = self._bucket(bucket_name)
            meta = self._generation(bucket, name, generation)
            self._check_preconditions(meta, conditions)
            live = bucket.objects.get(name) is meta
            if live and generation is None and bucket.versioning:
                live_path = meta.meta_path
                self._retire(bucket, meta)
                os.unlink(live_path)
            else:
                os.unlink(meta.meta_path)
                try:
                    os.unlink(meta.data_path)
                except OSError:
                    pass
                if not live:
                    versions = bucket.noncurrent[name]
                    del versions[meta.generation]
                    if not versions:
                        del bucket.noncurrent[name]
            if live:
                del bucket.objects[name]
                index = bisect.bisect_left(bucket.keys, name)
                del bucket.keys[index]

    def list_objects(self, bucket_name, prefix, delimiter, after, skip_prefix, max_keys):
        """Objects and common prefixes after `after` (and not under `skip_prefix`), at most `max_keys`.

        Returns (objects, prefixes, truncated, last) where last is ("k", key) or ("p", prefix).
        """
        with self.lock:
            bucket = self._bucket(bucket_name)
            keys = bucket.keys
            i = bisect.bisect_left(keys, prefix)
            if after is not None:
                i = max(i, bisect.bisect_right(keys, after))
            if skip_prefix is not None:
                i = max(i, bisect.bisect_left(keys, skip_prefix))
                while i < len(keys) and keys[i].startswith(skip_prefix):
                    i += 1
            objects, prefixes, last, truncated = [], [], None, False
            count = 0
            while i < len(keys):
                key = keys[i]
                if not key.startswith(prefix):
                    break
                if count >= max_keys:
                    truncated = max_keys > 0
                    break
                if delimiter:
                    at = key.find(delimiter, len(prefix))
                    if at >= 0:
                        common = key[: at + len(delimiter)]
                        prefixes.append(common)
                        count += 1
                        last = ("p", common)
                        i += 1
                        while i < len(keys) and keys[i].startswith(common):
                            i += 1
                        continue
                objects.append(bucket.objects[key])
                count += 1
                last = ("k", key)
                i += 1
            return objects, prefixes, truncated, last

    # -- multipart uploads

    def create_upload(self, bucket_name, name, content_type, attrs):
        with self.lock:
            self._bucket(bucket_name)
            upload_id = "ABPnzm" + secrets.token_urlsafe(48)
            directory = os.path.join(self.uploads_dir, upload_id)
            os.makedirs(directory)
            info = {"bucket": bucket_name, "name": name, "content_type": content_type, "attrs": attrs}
            write_atomically(os.path.join(directory, "upload.json"), json.dumps(info).encode(), self.tmp_dir)
            upload = Upload()
            upload.upload_id = upload_id
            upload.bucket = bucket_name
            upload.name = name
            upload.content_type = content_type
            upload.attrs = attrs
            upload.parts = {}
            upload.directory = directory
            self.uploads[upload_id] = upload
            return upload_id

    def _upload(self, upload_id, bucket_name, name):
        upload = self.uploads.get(upload_id) if UPLOAD_ID.match(upload_id) else None
        if upload is None or upload.bucket != bucket_name or upload.name != name:
            raise GcsError(404, "NoSuchUpload", "The requested upload was not found.")
        return upload

    def check_upload(self, upload_id, bucket_name, name):
        with self.lock:
            self._bucket(bucket_name)
            self._upload(upload_id, bucket_name, name)

    def put_part(self, upload_id, bucket_name, name, number, tmp_path, size, md5):
        with self.lock:
            try:
                upload = self._upload(upload_id, bucket_name, name)
            except GcsError:
                os.unlink(tmp_path)
                raise
            path = os.path.join(upload.directory, "%d.%s.part" % (number, md5))
            os.replace(tmp_path, path)
            old = upload.parts.get(number)
            if old is not None and old[0] != path:
                try:
                    os.unlink(old[0])
                except OSError:
                    pass
            upload.parts[number] = (path, size, md5)

    def open_parts(self, upload_id, bucket_name, name, wanted):
        """The parts `wanted` ([(number, etag)]) of an upload, checked and opened; or, for an upload
        completed already, its result."""
        with self.lock:
            self._bucket(bucket_name)
            done = self.completed.get(upload_id)
            if done is not None and done[0] == bucket_name and done[1] == name:
                return None, done[2]
            upload = self._upload(upload_id, bucket_name, name)
            files = []
            try:
                for index, (number, etag) in enumerate(wanted):
                    part = upload.parts.get(number)
                    if part is None or unquote_etag(etag) != part[2]:
                        raise GcsError(
                            400, "InvalidPart",
                            "One or more of the specified parts could not be found, or its entity tag "
                            "did not match the part's.",
                            details=[("Details", "part %d" % number)],
                        )
                    if index < len(wanted) - 1 and part[1] < MIN_PART_SIZE:
                        raise GcsError(
                            400, "EntityTooSmall",
                            "Your proposed upload is smaller than the minimum allowed object size: every "
                            "part but the last must be at least 5 MiB.",
                            details=[("Details", "part %d has %d bytes" % (number, part[1]))],
                        )
                    files.append((open(part[0], "rb"), part[1], part[2]))
            except BaseException:
                for f, _, _ in files:
                    f.close()
                raise
            return (upload.content_type, upload.attrs, files), None

    def abort_upload(self, upload_id, bucket_name, name):
        with self.lock:
            self._bucket(bucket_name)
            if upload_id in self.aborted:
                return
            upload = self._upload(upload_id, bucket_name, name)
            del self.uploads[upload_id]
            self.aborted.add(upload_id)
            shutil.rmtree(upload.directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Authorization


class Authorizer:
    def __init__(self, public_key, client_email):
        self.public_key = public_key
        self.client_email = client_email
        self.lock = threading.Lock()
        self.verified = {}

    def _verify(self, signature, message):
        try:
            self.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            return False

    def check_bearer(self, value):
        def refuse(why):
            return GcsError(
                401, "AuthenticationRequired", "Invalid Credentials: " + why,
                headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')],
            )

        if value is None:
            return GcsError(
                401, "AuthenticationRequired",
                "Anonymous caller does not have access: this server needs an Authorization: Bearer token "
                "or a signed URL.",
                headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')],
            )
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return refuse("the Authorization header is not 'Bearer <token>'.")
        now = time.time()
        with self.lock:
            expiry = self.verified.get(token)
        if expiry is not None and expiry > now:
            return None
        pieces = token.split(".")
        if len(pieces) != 3:
            return refuse("the bearer token is not a JWT.")
        try:
            header = json.loads(b64url_decode(pieces[0]))
            claims = json.loads(b64url_decode(pieces[1]))
            signature = b64url_decode(pieces[2])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return refuse("the bearer token is not a JWT.")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return refuse("the bearer token is not a JWT.")
        if header.get("alg") != "RS256":
            return refuse("the JWT is not signed with RS256.")
        if not self._verify(signature, (pieces[0] + "." + pieces[1]).encode("ascii")):
            return refuse("the JWT's signature does not verify with the service account's key.")
        exp, iat = claims.get("exp"), claims.get("iat")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            return refuse("the JWT has no expiry (exp).")
        if exp <= now:
            return refuse("the JWT expired.")
        if isinstance(iat, (int, float)) and not isinstance(iat, bool) and iat > now + MAX_SKEW_SECONDS:
            return refuse("the JWT is issued in the future (iat).")
        if self.client_email is not None and claims.get("iss") != self.client_email:
            return refuse("the JWT is issued by another account.")
        with self.lock:
            if len(self.verified) > 4096:
                self.verified.clear()
            self.verified[token] = exp
        return None

    def check_signed_url(self, method, raw_path, raw_query, headers):
        """Verifies a V4 signed URL (GOOG4-RSA-SHA256) as Google does; None if it is good."""

        def malformed(message):
            return GcsError(400, "AuthorizationQueryParametersError", message)

        def denied(message):
            return GcsError(403, "AccessDenied", message)

        pairs = []
        for piece in raw_query.split("&"):
            if not piece:
                continue
            name, _, value = piece.partition("=")
            pairs.append(
                (urllib.parse.unquote_plus(name, errors="replace"), urllib.parse.unquote_plus(value, errors="replace"))
            )
        params = {}
        for name, value in pairs:
            if name.startswith("X-Goog-"):
                if name in params:
                    return malformed("The query parameter %s appears more than once." % name)
                params[name] = value
        required = ("X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires",
                    "X-Goog-SignedHeaders", "X-Goog-Signature")
        missing = [name for name in required if name not in params]
        if missing:
            return malformed("The signed URL lacks the query parameter(s) %s." % ", ".join(missing))
        if params["X-Goog-Algorithm"] != SIGNING_ALGORITHM:
            return malformed("X-Goog-Algorithm must be %s." % SIGNING_ALGORITHM)
        date = params["X-Goog-Date"]
        try:
            if not re.fullmatch(r"\d{8}T\d{6}Z", date):
                raise ValueError(date)
            signed_at = dt.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            return malformed("X-Goog-Date is not a date of the form YYYYMMDDTHHMMSSZ.")
        expires_text = params["X-Goog-Expires"]
        if not re.fullmatch(r"\d{1,12}", expires_text):
            return malformed("X-Goog-Expires is not a number of seconds.")
        expires = int(expires_text)
        if expires < 1 or expires > MAX_SIGNED_URL_SECONDS:
            return malformed("X-Goog-Expires must be between 1 and 604800 seconds (7 days).")
        account, slash, scope = params["X-Goog-Credential"].partition("/")
        scope_parts = scope.split("/")
        if not account or not slash or len(scope_parts) != 4 or scope_parts[2:] != ["storage", "goog4_request"]:
            return malformed("X-Goog-Credential is not EMAIL/DATE/LOCATION/storage/goog4_request.")
        if scope_parts[0] != date[:8]:
            return malformed("The date of X-Goog-Credential is not the date of X-Goog-Date.")
        signed_names = params["X-Goog-SignedHeaders"].split(";")
        if not all(HEADER_NAME.match(name) for name in signed_names):
            return malformed("X-Goog-SignedHeaders is not a ;-separated list of lowercase header names.")
        if "host" not in signed_names:
            return malformed("X-Goog-SignedHeaders must include host.")
        canonical_headers = []
        for name in signed_names:
            values = headers.get_all(name) or []
            canonical_headers.append(
                "%s:%s" % (name, ",".join(" ".join(value.split()) for value in values))
            )
        canonical_query = "&".join(
            "%s=%s" % pair
            for pair in sorted(
                (strict_encode(name), strict_encode(value))
                for name, value in pairs
                if name != "X-Goog-Signature"
            )
        )
        canonical_request = "\n".join(
            [method, raw_path, canonical_query, "\n".join(canonical_headers), "",
             params["X-Goog-SignedHeaders"], UNSIGNED_PAYLOAD]
        )
        string_to_sign = "\n".join(
            [SIGNING_ALGORITHM, date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
        )
        try:
            signature = bytes.fromhex(params["X-Goog-Signature"])
        except ValueError:
            signature = b""
        if not signature or not self._verify(signature, string_to_sign.encode("utf-8")):
            return GcsError(
                403, "SignatureDoesNotMatch", "Access denied.",
                details=[
                    ("Details", "The request signature we calculated does not match the signature you "
                                "provided. Check your Google secret key and signing method."),
                    ("StringToSign", string_to_sign),
                    ("CanonicalRequest", canonical_request),
                ],
            )
        if self.client_email is not None and account != self.client_email:
            return denied("The signed URL's credential names another service account.")
        now = time.time()
        if signed_at > now + MAX_SKEW_SECONDS:
            return denied("Request is not yet valid: X-Goog-Date is in the future.")
        if now > signed_at + expires:
            return denied(
                "Request has expired: the signed URL expired at %s."
                % email.utils.formatdate(signed_at + expires, usegmt=True)
            )
        return None


# ---------------------------------------------------------------------------------------------------------
# HTTP


class Response:
    """A status, headers and a body: bytes, or `count` bytes of `file` from `offset`. `length`, when set,
    is the Content-Length of a response without a body (HEAD, 304)."""

    __slots__ = ("status", "headers", "body", "file", "offset", "count", "length")

    def __init__(self, status, headers=None, body=b"", file=None, offset=0, count=0, length=None):
        self.status = status
        self.headers = headers or []
        self.body = body
        self.file = file
        self.offset = offset
        self.count = count
        self.length = length


class BodyReader:
    """A request body: Content-Length bytes, or chunked."""

    def __init__(self, rfile, length, chunked):
        self.rfile = rfile
        self.remaining = length
        self.chunked = chunked
        self.done = (not chunked) and length == 0
        self.chunk_left = 0

    def _exact(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise GcsError(400, "IncompleteBody", "The request body ended early.", close=True)
        return data

    def read(self, n=CHUNK):
        if self.done:
            return b""
        if not self.chunked:
            data = self._exact(min(n, self.remaining))
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise GcsError(400, "InvalidRequest", "Malformed chunked body.", close=True)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise GcsError(400, "InvalidRequest", "Malformed chunked body.", close=True)
            if size < 0:
                raise GcsError(400, "InvalidRequest", "Malformed chunked body.", close=True)
            if size == 0:
                while True:
                    trailer = self.rfile.readline(8192)
                    if not trailer.endswith(b"\n"):
                        raise GcsError(400, "InvalidRequest", "Malformed chunked body.", close=True)
                    if trailer in (b"\r\n", b"\n"):
                        break
                self.done = True
                return b""
            self.chunk_left = size
        data = self._exact(min(n, self.chunk_left))
        self.chunk_left -= len(data)
        if self.chunk_left == 0 and self._exact(2) != b"\r\n":
            raise GcsError(400, "InvalidRequest", "Malformed chunked body.", close=True)
        return data

    def read_all(self, limit):
        parts, total = [], 0
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            total += len(data)
            if total > limit:
                raise GcsError(400, "EntityTooLarge", "The request body is too large.", close=True)
            parts.append(data)

    def drain(self, limit):
        total = 0
        while not self.done:
            total += len(self.read())
            if total > limit:
                return False
        return True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, store, authorizer, verbose):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.store = store
        self.authorizer = authorizer
        self.verbose = verbose
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind would look the host's name up (socket.getfqdn), which can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A request line that cannot be parsed is answered with a status line (not HTTP/0.9's bare body).
    default_request_version = "HTTP/1.0"
    disable_nagle_algorithm = True

    def version_string(self):
        return "GcsTestServer/1.0"

    # -- plumbing

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))
            sys.stderr.flush()

    def log_request(self, code="-", size="-"):
        if not self.server.verbose:
            return
        shown = []
        for name, value in (self.headers.items() if self.headers is not None else []):
            if name.lower() == "authorization":
                value = value[:16] + "..."
            shown.append("%s: %s" % (name, value))
        self.log_message('"%s" %s [%s]', self.requestline, getattr(code, "value", code), "; ".join(shown))

    def do_GET(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def __getattr__(self, name):
        # Any other method (PATCH, OPTIONS, ...): answered 405 once authorized.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self):
        self.store = self.server.store
        self.body = None
        self.started = False
        close = False
        try:
            try:
                response = self.route()
            except GcsError as error:
                response = self.error_response(error)
                close = error.close
            if close:
                self.close_connection = True
            elif self.body is not None and not self.body.done:
                try:
                    if not self.body.drain(MAX_DRAIN):
                        close = True
                except GcsError:
                    close = True
            self.send(response, close)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.close_connection = True
            if not self.started:
                try:
                    self.send(
                        Response(500, [("Content-Type", "application/xml; charset=UTF-8")],
                                 error_xml("InternalError", "The test server failed: see its stderr.")),
                        True,
                    )
                except Exception:
                    pass

    def send(self, response, close=False):
        self.started = True
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.length is not None:
                length = response.length
            elif response.file is not None:
                length = response.count
            else:
                length = len(response.body)
            if response.status != 204 and not 100 <= response.status < 200:
                self.send_header("Content-Length", str(length))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD" or response.status in (204, 304) or response.length is not None:
                return
            if response.file is not None:
                if length:
                    sent = self.connection.sendfile(response.file, response.offset, length)
                    if sent != length:
                        self.close_connection = True
            elif response.body:
                self.wfile.write(response.body)
        finally:
            if response.file is not None:
                response.file.close()

    def error_response(self, error):
        if self.json_api:
            body = error_json(error.status, error.code, error.message)
            content_type = "application/json; charset=UTF-8"
        else:
            body = error_xml(error.code, error.message, error.details)
            content_type = "application/xml; charset=UTF-8"
        return Response(error.status, [("Content-Type", content_type)] + list(error.headers), body)

    def open_body(self):
        """Sets self.body from Content-Length or Transfer-Encoding: chunked."""
        encoding = self.headers.get("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if encoding is not None:
            if encoding.strip().lower() != "chunked" or lengths:
                self.body = BodyReader(self.rfile, 0, False)
                raise GcsError(400, "InvalidRequest", "Unsupported Transfer-Encoding.", close=True)
            self.body = BodyReader(self.rfile, 0, True)
            return
        if len(set(lengths)) > 1 or (lengths and not re.fullmatch(r"\d{1,15}", lengths[0].strip())):
            self.body = BodyReader(self.rfile, 0, False)
            raise GcsError(400, "InvalidRequest", "Invalid Content-Length.", close=True)
        self.body = BodyReader(self.rfile, int(lengths[0]) if lengths else 0, False)

    def body_to_temp(self):
        """Reads the body into a temporary file: (path, size, md5 hex)."""
        f, path = self.store.new_temp()
        digest = hashlib.md5()
        size = 0
        try:
            with f:
                while True:
                    data = self.body.read()
                    if not data:
                        break
                    digest.update(data)
                    size += len(data)
                    f.write(data)
        except BaseException:
            os.unlink(path)
            raise
        md5 = digest.hexdigest()
        expected = self.headers.get("Content-MD5")
        if expected is not None:
            try:
                ok = base64.b64decode(expected.strip(), validate=True) == bytes.fromhex(md5)
            except (ValueError, binascii.Error):
                ok = False
            if not ok:
                os.unlink(path)
                raise GcsError(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")
        return path, size, md5

    # -- routing

    def route(self):
        self.json_api = False
        target = self.path
        if target.startswith(("http://", "https://")):
            after = target.split("://", 1)[1]
            target = "/" + after.split("/", 1)[1] if "/" in after else "/"
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.split("#", 1)[0]
        self.raw_path, self.raw_query = raw_path, raw_query
        self.json_api = raw_path.startswith("/storage/v1/") or raw_path == "/storage/v1"
        self.open_body()
        if not raw_path.startswith("/"):
            raise bad_request("The request path must start with /.", "InvalidURI")
        try:
            pairs = urllib.parse.parse_qsl(
                raw_query, keep_blank_values=True, errors="strict", max_num_fields=1000
            )
        except (ValueError, UnicodeDecodeError):
            raise bad_request("The query string is malformed.", "InvalidURI")
        self.query = {}
        for name, value in pairs:
            self.query.setdefault(name, value)

        authorization = self.headers.get("Authorization")
        signed = any(name in self.query for name in ("X-Goog-Signature", "X-Goog-Algorithm", "X-Goog-Credential"))
        authorizer = self.server.authorizer
        if signed:
            if authorization is not None:
                raise bad_request(
                    "The request is authorized twice: by an Authorization header and a signed URL."
                )
            error = authorizer.check_signed_url(self.command, raw_path, raw_query, self.headers)
        else:
            error = authorizer.check_bearer(authorization)
        if error is not None:
            raise error

        if self.json_api:
            return self.route_json(raw_path)
        if raw_path.startswith(("/upload/", "/batch/")):
            raise GcsError(501, "NotImplemented", "The test server does not implement this API.")
        rest = raw_path[1:]
        bucket_part, slash, object_part = rest.partition("/")
        try:
            bucket = urllib.parse.unquote_to_bytes(bucket_part).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The bucket name is not UTF-8.", "InvalidBucketName")
        if not bucket:
            raise bad_request("The request names no bucket.", "InvalidURI")
        try:
            name = urllib.parse.unquote_to_bytes(object_part).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The object name is not UTF-8.", "InvalidObjectName")
        if not name:
            return self.bucket_request(bucket)
        return self.object_request(bucket, name)

    def int_query(self, name, low=None, high=None):
        value = self.query.get(name)
        if value is None:
            return None
        if not re.fullmatch(r"\d{1,19}", value):
            raise bad_request("The query parameter %s is not a number." % name)
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise bad_request("The query parameter %s is out of range." % name)
        return number

    def generation_query(self):
        """The `generation` query parameter: None, or a positive integer; else 400."""
        value = self.query.get("generation")
        if value is None:
            return None
        generation = parse_generation(value)
        if generation is None:
            raise bad_request("Invalid argument: the generation %r is not a positive integer." % value)
        return generation

    def int_header(self, name):
        value = self.headers.get(name)
        if value is None:
            return None
        value = value.strip()
        if not re.fullmatch(r"\d{1,19}", value):
            raise bad_request("The header %s is not a number." % name)
        return int(value)

    def write_conditions(self):
        return (self.int_header("x-goog-if-generation-match"), self.int_header("x-goog-if-metageneration-match"))

    def stored_attrs(self):
        attrs = {}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in STORED_HEADERS or lower.startswith("x-goog-meta-"):
                attrs[lower] = value
        return attrs

    # -- JSON API (buckets)

    def route_json(self, raw_path):
        segments = raw_path.split("/")[3:]  # after /storage/v1/
        if segments == ["b"] and self.command == "POST":
            return self.create_bucket()
        if segments == ["b"] and self.command == "GET":
            if "project" not in self.query:
                raise bad_request("Required parameter: project", "required")
            items = [self.bucket_json(b) for b in self.store.list_buckets()]
            return self.json_response(200, {"kind": "storage#buckets", "items": items})
        if len(segments) == 2 and segments[0] == "b":
            name = urllib.parse.unquote(segments[1])
            if self.command == "GET":
                bucket = self.store.get_bucket(name)
                if bucket is None:
                    raise GcsError(404, "notFound", "The specified bucket does not exist.")
                return self.json_response(200, self.bucket_json(bucket))
            if self.command == "DELETE":
                self.store.delete_bucket(name)
                return Response(204)
            if self.command == "PATCH":
                return self.patch_bucket(name)
        raise GcsError(
            501, "notImplemented",
            "The test server implements only bucket create, get, list, delete and patch (of versioning).",
        )

    def json_response(self, status, value):
        return Response(status, [("Content-Type", "application/json; charset=UTF-8")],
                        json.dumps(value).encode("utf-8"))

    @staticmethod
    def bucket_json(bucket):
        # The etag Google gives a bucket: its metageneration as a protocol buffer (field 1, varint), base64.
        varint, value = bytearray(b"\x08"), bucket.metageneration
        while value >= 0x80:
            varint.append(value & 0x7F | 0x80)
            value >>= 7
        varint.append(value)
        return {
            "kind": "storage#bucket",
            "id": bucket.name,
            "selfLink": "https://www.googleapis.com/storage/v1/b/" + bucket.name,
            "projectNumber": "100000000000",
            "name": bucket.name,
            "timeCreated": iso_millis(bucket.created),
            "updated": iso_millis(bucket.updated),
            "metageneration": str(bucket.metageneration),
            "location": "US",
            "locationType": "multi-region",
            "storageClass": "STANDARD",
            "versioning": {"enabled": bucket.versioning},
            "etag": base64.b64encode(bytes(varint)).decode(),
        }

    def json_body(self):
        """The request body: a JSON object; else 400."""
        raw = self.body.read_all(1 << 20)
        try:
            info = json.loads(raw)
        except ValueError:
            raise bad_request("The request body is not JSON.", "parseError")
        if not isinstance(info, dict):
            raise bad_request("The request body is not a JSON object.", "invalid")
        return info

    @staticmethod
    def versioning_field(info):
        """The `versioning` of a bucket resource: True, False (also when null or absent); else 400."""
        versioning = info.get("versioning")
        if versioning is None:
            return False
        enabled = versioning.get("enabled", False) if isinstance(versioning, dict) else None
        if not isinstance(enabled, bool) or set(versioning) - {"enabled"}:
            raise bad_request("Invalid value for versioning: %s" % json.dumps(versioning), "invalid")
        return enabled

    def patch_bucket(self, name):
        info = self.json_body()
        unsupported = sorted(set(info) - {"versioning", "name"})
        if unsupported:
            raise GcsError(501, "notImplemented", "The test server patches only versioning, not %s." % unsupported)
        if "name" in info and info["name"] != name:
            raise bad_request("The bucket name cannot be changed.", "invalid")
        versioning = self.versioning_field(info) if "versioning" in info else None
        bucket = self.store.patch_bucket(name, versioning, self.int_query("ifMetagenerationMatch"))
        return self.json_response(200, self.bucket_json(bucket))

    def create_bucket(self):
        if "project" not in self.query:
            raise bad_request("Required parameter: project", "required")
        info = self.json_body()
        name = info.get("name")
        if not isinstance(name, str) or not BUCKET_NAME.match(name) or ".." in name:
            raise bad_request("Invalid bucket name: %r" % (name,), "invalid")
        bucket = self.store.create_bucket(name, self.versioning_field(info))
        if bucket is None:
            raise GcsError(
                409, "conflict",
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
        return self.json_response(200, self.bucket_json(bucket))

    # -- XML API: buckets

    def bucket_request(self, bucket):
        if self.command == "HEAD":
            self.store.check_bucket(bucket)
            return Response(200, [("Content-Type", "application/xml; charset=UTF-8")])
        if self.command != "GET":
            raise GcsError(501, "NotImplemented", "The test server does not implement this bucket request.")
        unsupported = {"uploads", "location", "versioning", "versions", "cors", "lifecycle", "logging", "acl",
                       "billing", "encryption", "storageClass", "website", "iamPolicy"}
        if unsupported & self.query.keys():
            raise GcsError(501, "NotImplemented", "The test server implements only listing live objects.")
        return self.list_objects(bucket)

    def list_objects(self, bucket):
        v2 = self.query.get("list-type") == "2"
        if "list-type" in self.query and not v2:
            raise bad_request("list-type must be 2.")
        prefix = self.query.get("prefix", "")
        delimiter = self.query.get("delimiter") or None
        max_keys = self.int_query("max-keys", 0)
        max_keys = MAX_KEYS if max_keys is None else min(max_keys, MAX_KEYS)
        url_encoding = self.query.get("encoding-type") == "url"
        after, skip_prefix = None, None
        start_after = self.query.get("start-after" if v2 else "marker") or None
        if start_after is not None:
            after = start_after
        token = self.query.get("continuation-token") if v2 else None
        if token is not None:
            try:
                decoded = b64url_decode(token).decode("utf-8")
                kind, marker = decoded[:1], decoded[1:]
                if kind not in ("k", "p"):
                    raise ValueError(token)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise bad_request("The continuation token is not valid.")
            if kind == "k":
                after = marker if after is None else max(after, marker)
            else:
                skip_prefix = marker
        objects, prefixes, truncated, last = self.store.list_objects(
            bucket, prefix, delimiter, after, skip_prefix, max_keys
        )

        def text(value):
            return xml_text(urllib.parse.quote(value, safe="/") if url_encoding else value)

        out = [XML_DECLARATION, '<ListBucketResult xmlns="%s">' % S3_NAMESPACE]
        out.append("<Name>%s</Name>" % xml_text(bucket))
        out.append("<Prefix>%s</Prefix>" % text(prefix))
        if v2:
            if start_after is not None:
                out.append("<StartAfter>%s</StartAfter>" % text(start_after))
            if token is not None:
                out.append("<ContinuationToken>%s</ContinuationToken>" % xml_text(token))
            out.append("<KeyCount>%d</KeyCount>" % (len(objects) + len(prefixes)))
        else:
            out.append("<Marker>%s</Marker>" % text(start_after or ""))
        out.append("<MaxKeys>%d</MaxKeys>" % max_keys)
        if delimiter is not None:
            out.append("<Delimiter>%s</Delimiter>" % text(delimiter))
        if url_encoding:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"))
        if truncated and last is not None:
            if v2:
                next_token = base64.urlsafe_b64encode((last[0] + last[1]).encode("utf-8")).decode().rstrip("=")
                out.append("<NextContinuationToken>%s</NextContinuationToken>" % next_token)
            else:
                out.append("<NextMarker>%s</NextMarker>" % text(last[1]))
        for meta in objects:
            out.append(
                "<Contents><Key>%s</Key><Generation>%d</Generation><MetaGeneration>1</MetaGeneration>"
                "<LastModified>%s</LastModified><ETag>%s</ETag><Size>%d</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
                % (text(meta.name), meta.generation, iso_millis(meta.updated), xml_text(quoted(meta.etag)),
                   meta.size)
            )
        for common in prefixes:
            out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % text(common))
        out.append("</ListBucketResult>")
        return Response(200, [("Content-Type", "application/xml; charset=UTF-8")], "".join(out).encode("utf-8"))

    # -- XML API: objects

    def object_request(self, bucket, name):
        method = self.command
        if method in ("GET", "HEAD"):
            if "uploadId" in self.query:
                raise GcsError(501, "NotImplemented", "The test server does not list an upload's parts.")
            return self.get_object(bucket, name)
        if method == "PUT":
            if "uploadId" in self.query or "partNumber" in self.query:
                return self.put_part(bucket, name)
            if self.headers.get("x-goog-copy-source") is not None:
                return self.copy_object(bucket, name)
            return self.put_object(bucket, name)
        if method == "POST":
            if "uploads" in self.query:
                return self.create_upload(bucket, name)
            if "uploadId" in self.query:
                return self.complete_upload(bucket, name)
            raise GcsError(501, "NotImplemented", "The test server does not implement POST uploads of forms.")
        if method == "DELETE":
            if "uploadId" in self.query:
                self.store.abort_upload(self.query["uploadId"], bucket, name)
                return Response(204)
            self.store.delete_object(bucket, name, self.generation_query(), self.write_conditions())
            return Response(204)
        raise GcsError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def object_headers(self, meta):
        headers = [
            ("Content-Type", meta.content_type),
            ("ETag", quoted(meta.etag)),
            ("Last-Modified", http_date(meta.updated)),
            ("x-goog-generation", str(meta.generation)),
            ("x-goog-metageneration", "1"),
            ("x-goog-stored-content-length", str(meta.size)),
            ("x-goog-stored-content-encoding", meta.attrs.get("content-encoding", "identity")),
            ("x-goog-hash", "md5=" + base64.b64encode(bytes.fromhex(meta.md5)).decode()),
            ("x-goog-storage-class", "STANDARD"),
            ("Accept-Ranges", "bytes"),
        ]
        for name, value in meta.attrs.items():
            headers.append((name, value))
        return headers

    def get_object(self, bucket, name):
        meta, f = self.store.open_object(bucket, name, self.generation_query())
        try:
            headers = self.object_headers(meta)
            status = self.read_preconditions(meta)
            if status == 304:
                f.close()
                kept = [h for h in headers if h[0] in ("ETag", "Last-Modified", "x-goog-generation")]
                return Response(304, kept, length=meta.size)
            first, last = 0, meta.size - 1
            ranged = self.requested_range(meta)
            if ranged is not None:
                first, last = ranged
                headers.append(("Content-Range", "bytes %d-%d/%d" % (first, last, meta.size)))
            count = last - first + 1
            if self.command == "HEAD":
                # The Content-Length of the GET, and no body.
                f.close()
                return Response(206 if ranged else 200, headers, length=count)
            return Response(206 if ranged else 200, headers, file=f, offset=first, count=count)
        except BaseException:
            f.close()
            raise

    def read_preconditions(self, meta):
        """200 to go on, 304 not modified; raises 412."""
        failed = GcsError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
        generation_match = self.int_header("x-goog-if-generation-match")
        if generation_match is not None and generation_match != meta.generation:
            raise failed
        if_match = self.headers.get("If-Match")
        if if_match is not None:
            tags = [t.strip() for t in if_match.split(",")]
            if "*" not in tags and not any(unquote_etag(t) == meta.etag for t in tags):
                raise failed
        else:
            since = self.headers.get("If-Unmodified-Since")
            stamp = parse_http_date(since) if since else None
            if stamp is not None and meta.updated // 1_000_000 > stamp:
                raise failed
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip() for t in if_none_match.split(",")]
            if "*" in tags or any(unquote_etag(t) == meta.etag for t in tags):
                return 304
        else:
            since = self.headers.get("If-Modified-Since")
            stamp = parse_http_date(since) if since else None
            if stamp is not None and meta.updated // 1_000_000 <= stamp:
                return 304
        return 200

    def requested_range(self, meta):
        """(first, last) of a satisfiable single range, None for the whole object; raises 416."""
        value = self.headers.get("Range")
        if value is None:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and unquote_etag(if_range) != meta.etag:
            parsed = parse_http_date(if_range)
            if parsed is None or meta.updated // 1_000_000 > parsed:
                return None
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
        if match is None or (not match.group(1) and not match.group(2)):
            return None  # not a single byte range: ignored, as HTTP says
        size = meta.size
        unsatisfiable = GcsError(
            416, "InvalidRange", "The requested range cannot be satisfied.",
            headers=[("Content-Range", "bytes */%d" % size)],
            details=[("Details", value.strip())],
        )
        if not match.group(1):
            suffix = int(match.group(2))
            if suffix == 0 or size == 0:
                raise unsatisfiable
            return max(0, size - suffix), size - 1
        first = int(match.group(1))
        if match.group(2) and int(match.group(2)) < first:
            return None  # invalid: ignored
        if first >= size:
            raise unsatisfiable
        last = int(match.group(2)) if match.group(2) else size - 1
        return first, min(last, size - 1)

    def put_object(self, bucket, name):
        check_object_name(name)
        conditions = self.write_conditions()
        self.store.check_bucket(bucket)
        tmp, size, md5 = self.body_to_temp()
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        meta = self.store.commit(bucket, name, tmp, size, md5, md5, content_type, self.stored_attrs(), conditions)
        return Response(200, self.write_headers(meta))

    def write_headers(self, meta):
        return [
            ("ETag", quoted(meta.etag)),
            ("x-goog-generation", str(meta.generation)),
            ("x-goog-metageneration", "1"),
            ("x-goog-hash", "md5=" + base64.b64encode(bytes.fromhex(meta.md5)).decode()),
            ("x-goog-stored-content-length", str(meta.size)),
            ("x-goog-stored-content-encoding", meta.attrs.get("content-encoding", "identity")),
        ]

    def copy_object(self, bucket, name):
        check_object_name(name)
        source = self.headers.get("x-goog-copy-source").strip().lstrip("/")
        source_bucket, slash, source_name = source.partition("/")
        source_bucket = urllib.parse.unquote(source_bucket)
        try:
            source_name = urllib.parse.unquote_to_bytes(source_name.split("?", 1)[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("x-goog-copy-source names an object whose name is not UTF-8.")
        if not slash or not source_name:
            raise bad_request("x-goog-copy-source must be bucket/object.")
        source_generation = self.headers.get("x-goog-copy-source-generation")
        if source_generation is not None:
            source_generation = parse_generation(source_generation)
            if source_generation is None:
                raise bad_request("x-goog-copy-source-generation is not a positive integer.")
        conditions = self.write_conditions()
        self.store.check_bucket(bucket)
        meta, src = self.store.open_object(source_bucket, source_name, source_generation)
        f, tmp = self.store.new_temp()
        try:
            with src, f:
                shutil.copyfileobj(src, f, CHUNK)
        except BaseException:
            os.unlink(tmp)
            raise
        if self.headers.get("x-goog-metadata-directive", "COPY").upper() == "REPLACE":
            content_type = self.headers.get("Content-Type") or "application/octet-stream"
            attrs = self.stored_attrs()
        else:
            content_type, attrs = meta.content_type, dict(meta.attrs)
        new = self.store.commit(bucket, name, tmp, meta.size, meta.md5, meta.etag, content_type, attrs, conditions)
        body = (
            "%s<CopyObjectResult><LastModified>%s</LastModified><ETag>%s</ETag></CopyObjectResult>"
            % (XML_DECLARATION, iso_millis(new.updated), xml_text(quoted(new.etag)))
        ).encode("utf-8")
        headers = self.write_headers(new) + [("Content-Type", "application/xml; charset=UTF-8")]
        return Response(200, headers, body)

    # -- XML API: multipart uploads

    def create_upload(self, bucket, name):
        check_object_name(name)
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        upload_id = self.store.create_upload(bucket, name, content_type, self.stored_attrs())
        body = (
            "%s<InitiateMultipartUploadResult xmlns=\"%s\"><Bucket>%s</Bucket><Key>%s</Key>"
            "<UploadId>%s</UploadId></InitiateMultipartUploadResult>"
            % (XML_DECLARATION, S3_NAMESPACE, xml_text(bucket), xml_text(name), upload_id)
        ).encode("utf-8")
        return Response(200, [("Content-Type", "application/xml; charset=UTF-8")], body)

    def put_part(self, bucket, name):
        upload_id = self.query.get("uploadId")
        if upload_id is None:
            raise bad_request("partNumber needs an uploadId.")
        number = self.int_query("partNumber", 1, MAX_PARTS)
        if number is None:
            raise bad_request("uploadId needs a partNumber.")
        self.store.check_upload(upload_id, bucket, name)
        tmp, size, md5 = self.body_to_temp()
        self.store.put_part(upload_id, bucket, name, number, tmp, size, md5)
        return Response(200, [("ETag", quoted(md5))])

    def complete_upload(self, bucket, name):
        upload_id = self.query["uploadId"]
        raw = self.body.read_all(4 << 20)
        try:
            root = ElementTree.fromstring(raw)
        except ElementTree.ParseError:
            raise bad_request("The XML you provided was not well-formed.", "MalformedXML")

        def local(tag):
            return tag.rsplit("}", 1)[-1]

        if local(root.tag) != "CompleteMultipartUpload":
            raise bad_request("The body is not a CompleteMultipartUpload.", "MalformedXML")
        wanted = []
        for part in root:
            if local(part.tag) != "Part":
                continue
            fields = {local(child.tag): (child.text or "").strip() for child in part}
            number = fields.get("PartNumber", "")
            if not re.fullmatch(r"\d{1,5}", number) or "ETag" not in fields:
                raise bad_request("Each Part needs a PartNumber and an ETag.", "MalformedXML")
            wanted.append((int(number), fields["ETag"]))
        if not wanted:
            raise bad_request("The upload names no parts.", "MalformedXML")
        if any(a[0] >= b[0] for a, b in zip(wanted, wanted[1:])):
            raise bad_request("The list of parts was not in ascending order.", "InvalidPartOrder")
        opened, done = self.store.open_parts(upload_id, bucket, name, wanted)
        if done is None:
            content_type, attrs, files = opened
            f, tmp = self.store.new_temp()
            size = 0
            try:
                with f:
                    for part, part_size, _ in files:
                        with part:
                            shutil.copyfileobj(part, f, CHUNK)
                        size += part_size
            except BaseException:
                for part, _, _ in files:
                    part.close()
                os.unlink(tmp)
                raise
            digest = hashlib.md5(b"".join(bytes.fromhex(md5) for _, _, md5 in files)).hexdigest()
            whole = hashlib.md5()
            with open(tmp, "rb") as g:
                for block in iter(lambda: g.read(CHUNK), b""):
                    whole.update(block)
            etag = "%s-%d" % (digest, len(files))
            try:
                done = self.store.commit(bucket, name, tmp, size, whole.hexdigest(), etag, content_type, attrs,
                                         self.write_conditions(), upload_id=upload_id)
            except GcsError as error:
                if error.code != "NoSuchUpload":
                    raise
                # Completed meanwhile by a retry of this request.
                _, done = self.store.open_parts(upload_id, bucket, name, wanted)
                if done is None:
                    raise
        body = (
            "%s<CompleteMultipartUploadResult xmlns=\"%s\"><Location>http://%s/%s/%s</Location>"
            "<Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag></CompleteMultipartUploadResult>"
            % (XML_DECLARATION, S3_NAMESPACE, xml_text(self.headers.get("Host", "")), xml_text(bucket),
               xml_text(strict_encode(name)), xml_text(bucket), xml_text(name), xml_text(quoted(done.etag)))
        ).encode("utf-8")
        headers = self.write_headers(done) + [("Content-Type", "application/xml; charset=UTF-8")]
        return Response(200, headers, body)


# ---------------------------------------------------------------------------------------------------------


def load_public_key(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"BEGIN CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("%s is not an RSA public key" % path)
    return key


def main(argv=None):
    parser = argparse.ArgumentParser(description="A Google Cloud Storage test server (see the module docstring).")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="the port to listen on (0: any free one)")
    parser.add_argument("--root", required=True, help="the folder that holds the buckets and objects")
    parser.add_argument("--public-key", required=True, help="the service account's RSA public key (PEM)")
    parser.add_argument("--client-email", default=None,
                        help="accept only tokens and signed URLs of this service account (default: any whose "
                             "signature verifies)")
    parser.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = parser.parse_args(argv)

    try:
        public_key = load_public_key(args.public_key)
    except (OSError, ValueError) as error:
        parser.error("--public-key: %s" % error)
    store = Store(args.root)
    server = Server((args.host, args.port), store, Authorizer(public_key, args.client_email), args.verbose)
    host, port = server.server_address[:2]
    shown = "[%s]" % host if ":" in host else host
    sys.stdout.write("GCS test server listening on http://%s:%d\n" % (shown, port))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
