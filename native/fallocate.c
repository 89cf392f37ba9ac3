/*
 * hvkit's native addon: fallocate(2) for disk image backends (and, from
 * tap.c, TAP devices for the NIC).
 *
 * Node's fs module cannot deallocate a range of a file (punch a hole) or
 * convert a range to unwritten zeroed extents; this addon exposes exactly
 * that, as a promise, running the system call on the libuv thread pool so
 * that the event loop never blocks on the filesystem.
 *
 *   fallocate(fd, mode, offset, length) -> Promise<void>
 *
 * mode is one of the exported constants (ALLOCATE, KEEP_SIZE,
 * PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE | KEEP_SIZE); any other
 * combination is refused. A failure rejects with an Error whose `code` is
 * the errno name (EOPNOTSUPP when the filesystem cannot do it) and whose
 * `errno` is the number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "tap.h"

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int mode;
  int64_t offset;
  int64_t length;
  int error;
} fallocate_request;

static const char *errno_name(int error) {
  switch (error) {
  case EOPNOTSUPP: return "EOPNOTSUPP";
  case ENOSYS: return "ENOSYS";
  case ENOSPC: return "ENOSPC";
  case EBADF: return "EBADF";
  case EINVAL: return "EINVAL";
  case EIO: return "EIO";
  case ENODEV: return "ENODEV";
  case EPERM: return "EPERM";
  case ESPIPE: return "ESPIPE";
  case EFBIG: return "EFBIG";
  case EROFS: return "EROFS";
  case ETXTBSY: return "ETXTBSY";
  default: return "EUNKNOWN";
  }
}

static void run_fallocate(napi_env env, void *data) {
  (void)env;
  fallocate_request *request = data;
  int rc;
  do {
    rc = fallocate(request->fd, request->mode, (off_t)request->offset, (off_t)request->length);
  } while (rc != 0 && errno == EINTR);
  request->error = rc == 0 ? 0 : errno;
}

static void settle(napi_env env, napi_status status, void *data) {
  fallocate_request *request = data;
  if (status == napi_ok && request->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, request->deferred, undefined);
  } else {
    int error = status == napi_ok ? request->error : ECANCELED;
    napi_value code, message, failure, number;
    napi_create_string_utf8(env, errno_name(error), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(error), NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &failure);
    napi_create_int32(env, error, &number);
    napi_set_named_property(env, failure, "errno", number);
    napi_reject_deferred(env, request->deferred, failure);
  }
  napi_delete_async_work(env, request->work);
  free(request);
}

static napi_value throw_type_error(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

/* Reads a non-negative integral number below 2^53 (a JS safe integer). */
static int read_int64(napi_env env, napi_value value, int64_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok) return 0;
  if (!isfinite(number) || number < 0 || number > 9007199254740991.0 || floor(number) != number) {
    return 0;
  }
  *out = (int64_t)number;
  return 1;
}

static int mode_allowed(int mode) {
  return mode == 0 || mode == FALLOC_FL_KEEP_SIZE ||
         mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) || mode == FALLOC_FL_ZERO_RANGE ||
         mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4) {
    return throw_type_error(env, "fallocate(fd, mode, offset, length) takes 4 arguments");
  }
  int64_t fd, mode, offset, length;
  if (!read_int64(env, argv[0], &fd) || fd > INT32_MAX) {
    return throw_type_error(env, "fallocate: fd must be a non-negative integer");
  }
  if (!read_int64(env, argv[1], &mode) || mode > INT32_MAX || !mode_allowed((int)mode)) {
    return throw_type_error(env, "fallocate: unsupported mode");
  }
  if (!read_int64(env, argv[2], &offset) || !read_int64(env, argv[3], &length) || length == 0) {
    return throw_type_error(env, "fallocate: offset must be >= 0 and length > 0 (safe integers)");
  }

  fallocate_request *request = calloc(1, sizeof(*request));
  if (request == NULL) {
    napi_throw_error(env, "ENOMEM", "fallocate: out of memory");
    return NULL;
  }
  request->fd = (int)fd;
  request->mode = (int)mode;
  request->offset = offset;
  request->length = length;

  napi_value promise, name;
  if (napi_create_promise(env, &request->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "hvkit:fallocate", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, run_fallocate, settle, request, &request->work) !=
          napi_ok) {
    free(request);
    napi_throw_error(env, NULL, "fallocate: could not create the request");
    return NULL;
  }
  if (napi_queue_async_work(env, request->work) != napi_ok) {
    napi_delete_async_work(env, request->work);
    free(request);
    napi_throw_error(env, NULL, "fallocate: could not queue the request");
    return NULL;
  }
  return promise;
}

static void export_int(napi_env env, napi_value exports, const char *name, int value) {
  napi_value number;
  napi_create_int32(env, value, &number);
  napi_set_named_property(env, exports, name, number);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "fallocate", NAPI_AUTO_LENGTH, js_fallocate, NULL, &fn);
  napi_set_named_property(env, exports, "fallocate", fn);
  export_int(env, exports, "ALLOCATE", 0);
  export_int(env, exports, "KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  export_int(env, exports, "PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  export_int(env, exports, "ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  if (tap_register(env, exports) != napi_ok) return NULL;
  return exports;
}
