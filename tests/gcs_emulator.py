"""A local Google Cloud Storage API for tests: the `gcp-storage-emulator` package serving one in-memory bucket on a
loopback port, and the environment that points the client libraries at it through their documented settings:

  STORAGE_EMULATOR_HOST            google-cloud-storage and gcsfs (etils.epath reads gs:// through fsspec/gcsfs)
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false   gcsfs: no bucket-type probe over gRPC, which the emulator lacks
  FSSPEC_GCS_TOKEN=anon            fsspec's per-protocol defaults: anonymous credentials, no metadata-server probe
  TENSORSTORE_GCS_HTTP_URL         tensorstore's gcs driver (orbax writes array data through it)
  GOOGLE_AUTH_TOKEN_FOR_TESTING    tensorstore: a fixed bearer token instead of looking for credentials
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket

import pytest

BUCKET = 'bucket'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def emulator(bucket: str = BUCKET):
  """Starts the emulator with `bucket`; yields the environment variables that point clients at it."""
  server_lib = pytest.importorskip('gcp_storage_emulator.server')
  if importlib.util.find_spec('gcsfs') is None:  # not imported here: it reads its settings when first imported
    pytest.skip('gcsfs is not installed (the gcs extra)')
  port = _free_port()
  patched = _send_generation_headers(server_lib)
  server = server_lib.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket)
  server.start()
  url = f'http://127.0.0.1:{port}'
  try:
    yield {'STORAGE_EMULATOR_HOST': url, 'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false', 'FSSPEC_GCS_TOKEN': 'anon',
           'TENSORSTORE_GCS_HTTP_URL': url, 'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator'}
  finally:
    server.stop()
    for methods, method, handler in patched:
      methods[method] = handler


def _send_generation_headers(server_lib):
  """GCS answers an object read with its generation in the `x-goog-generation` header; the emulator leaves the
  header out, and tensorstore (orbax's OCDBT manifests are read, then rewritten conditionally) needs it. Adds it to
  the emulator's object-read handlers; returns what to put back."""
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  def with_generation(handler):
    def read(request, response, storage, *args, **kwargs):
      handler(request, response, storage, *args, **kwargs)
      if int(response.status) in (200, 206):
        try:
          obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
        except Exception:  # pylint: disable=broad-except
          return
        response['x-goog-generation'] = str(obj['generation'])
        response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))
    return read

  patched = []
  for _, methods in server_lib.HANDLERS:
    for method, handler in list(methods.items()):
      if handler in (objects.get, objects.download):
        patched.append((methods, method, handler))
        methods[method] = with_generation(handler)
  return patched


@contextlib.contextmanager
def in_this_process(env: dict[str, str], monkeypatch):
  """Points this process's clients at the emulator. fsspec read its FSSPEC_* defaults when it was imported, so the
  token default also goes into `fsspec.config.conf`; gcsfs reads its switch when first imported (after this)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  from etils.epath import backend  # pylint: disable=g-import-not-at-top

  def forget_clients():
    fsspec.get_filesystem_class('gcs').clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access

  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setitem(fsspec.config.conf, 'gcs', {**fsspec.config.conf.get('gcs', {}), 'token': 'anon'})
  forget_clients()
  yield
  forget_clients()
