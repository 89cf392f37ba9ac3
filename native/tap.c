/*
 * hvkit's native addon, TAP part: what Node cannot do with /dev/net/tun.
 *
 *   tapOpen(name, vnetHeader, offloads) -> { fd, name }
 *       opens /dev/net/tun non-blocking and close-on-exec, attaches it to
 *       the TAP interface `name` (created when missing; "" lets the kernel
 *       pick), without packet information; with vnetHeader each frame
 *       travels behind a 10-byte virtio_net_hdr and TUNSETOFFLOAD announces
 *       which partial-checksum and GSO frames this end accepts.
 *   tapSetOffload(fd, offloads)
 *   tapRead(fd, buffer) -> bytes read, or -errno (-EAGAIN: nothing waiting)
 *   tapWrite(fd, header, frame) -> bytes written, or -errno (one writev)
 *   pollStart(fd, callback) -> handle: calls callback() on the event loop
 *       each time fd becomes readable (libuv uv_poll, so worker threads work)
 *   pollStop(handle), pollResume(handle), pollClose(handle)
 *   tapClose(fd): closing the last fd of a TAP this process created removes
 *       the interface (closed here: Node's fs would warn about a fd it did
 *       not open, in a worker thread)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "tap.h"

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) return NULL;                                                            \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int error) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(error));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static int get_fd(napi_env env, napi_value value, int *fd) {
  return napi_get_value_int32(env, value, fd) == napi_ok && *fd >= 0;
}

static napi_value tap_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "tapOpen(name, vnetHeader, offloads)");
    return NULL;
  }
  char name[IFNAMSIZ];
  size_t length = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &length) != napi_ok ||
      length >= IFNAMSIZ - 1) {
    napi_throw_type_error(env, NULL, "a TAP name is a string of at most 15 bytes");
    return NULL;
  }
  bool vnet = false;
  uint32_t offloads = 0;
  CHECK(napi_get_value_bool(env, argv[1], &vnet));
  CHECK(napi_get_value_uint32(env, argv[2], &offloads));

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open /dev/net/tun", errno);
  struct ifreq request;
  memset(&request, 0, sizeof request);
  request.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(request.ifr_name, name, length);
  if (ioctl(fd, TUNSETIFF, &request) < 0) {
    int error = errno;
    close(fd);
    return throw_errno(env, "TUNSETIFF", error);
  }
  if (vnet) {
    int size = 10;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 || ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0) {
      int error = errno;
      close(fd);
      return throw_errno(env, "TUNSETOFFLOAD", error);
    }
  }
  napi_value result, fd_value, name_value;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_int32(env, fd, &fd_value));
  CHECK(napi_create_string_utf8(env, request.ifr_name, strnlen(request.ifr_name, IFNAMSIZ), &name_value));
  CHECK(napi_set_named_property(env, result, "fd", fd_value));
  CHECK(napi_set_named_property(env, result, "name", name_value));
  return result;
}

static napi_value tap_set_offload(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint32_t offloads;
  if (argc < 2 || !get_fd(env, argv[0], &fd) || napi_get_value_uint32(env, argv[1], &offloads) != napi_ok) {
    napi_throw_type_error(env, NULL, "tapSetOffload(fd, offloads)");
    return NULL;
  }
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0) return throw_errno(env, "TUNSETOFFLOAD", errno);
  return NULL;
}

static int get_bytes(napi_env env, napi_value value, void **data, size_t *length) {
  bool is = false;
  if (napi_is_typedarray(env, value, &is) != napi_ok || !is) return 0;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, value, &type, length, data, &buffer, &offset) != napi_ok) return 0;
  return type == napi_uint8_array;
}

static napi_value tap_read(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  void *data;
  size_t length;
  if (argc < 2 || !get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &length)) {
    napi_throw_type_error(env, NULL, "tapRead(fd, Uint8Array)");
    return NULL;
  }
  ssize_t n;
  do {
    n = read(fd, data, length);
  } while (n < 0 && errno == EINTR);
  napi_value result;
  CHECK(napi_create_int32(env, n < 0 ? -errno : (int32_t)n, &result));
  return result;
}

static napi_value tap_write(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  struct iovec parts[2];
  if (argc < 3 || !get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &parts[0].iov_base, &parts[0].iov_len) ||
      !get_bytes(env, argv[2], &parts[1].iov_base, &parts[1].iov_len)) {
    napi_throw_type_error(env, NULL, "tapWrite(fd, Uint8Array, Uint8Array)");
    return NULL;
  }
  ssize_t n;
  do {
    n = writev(fd, parts, 2);
  } while (n < 0 && errno == EINTR);
  napi_value result;
  CHECK(napi_create_int32(env, n < 0 ? -errno : (int32_t)n, &result));
  return result;
}

static napi_value tap_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (argc < 1 || !get_fd(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "tapClose(fd)");
    return NULL;
  }
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return NULL;
}

/* One uv_poll watching a fd, calling a JS function when it is readable. */
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int active;
  int closing;
} poll_watch;

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  poll_watch *watch = handle->data;
  if (watch->closing) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(watch->env, &scope) != napi_ok) return;
  napi_value callback, global, argv[1];
  if (napi_get_reference_value(watch->env, watch->callback, &callback) == napi_ok && callback &&
      napi_get_global(watch->env, &global) == napi_ok) {
    napi_create_int32(watch->env, status, &argv[0]);
    napi_value ignored;
    napi_make_callback(watch->env, watch->context, global, callback, 1, argv, &ignored);
  }
  napi_close_handle_scope(watch->env, scope);
}

static void on_closed(uv_handle_t *handle) {
  free(handle->data);
}

static napi_value poll_start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  napi_valuetype type;
  if (argc < 2 || !get_fd(env, argv[0], &fd) || napi_typeof(env, argv[1], &type) != napi_ok ||
      type != napi_function) {
    napi_throw_type_error(env, NULL, "pollStart(fd, callback)");
    return NULL;
  }
  struct uv_loop_s *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  poll_watch *watch = calloc(1, sizeof *watch);
  if (!watch) return throw_errno(env, "pollStart", ENOMEM);
  watch->env = env;
  if (uv_poll_init(loop, &watch->poll, fd) != 0) {
    free(watch);
    return throw_errno(env, "uv_poll_init", EBADF);
  }
  watch->poll.data = watch;
  napi_value resource_name;
  napi_create_string_utf8(env, "hvkit.tap", NAPI_AUTO_LENGTH, &resource_name);
  napi_create_reference(env, argv[1], 1, &watch->callback);
  napi_async_init(env, NULL, resource_name, &watch->context);
  uv_poll_start(&watch->poll, UV_READABLE, on_readable);
  watch->active = 1;
  napi_value handle;
  CHECK(napi_create_external(env, watch, NULL, NULL, &handle));
  return handle;
}

static poll_watch *get_watch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok) {
    napi_throw_type_error(env, NULL, "a poll handle");
    return NULL;
  }
  return data;
}

static napi_value poll_stop(napi_env env, napi_callback_info info) {
  poll_watch *watch = get_watch(env, info);
  if (watch && !watch->closing && watch->active) {
    uv_poll_stop(&watch->poll);
    watch->active = 0;
  }
  return NULL;
}

static napi_value poll_resume(napi_env env, napi_callback_info info) {
  poll_watch *watch = get_watch(env, info);
  if (watch && !watch->closing && !watch->active) {
    uv_poll_start(&watch->poll, UV_READABLE, on_readable);
    watch->active = 1;
  }
  return NULL;
}

static napi_value poll_close(napi_env env, napi_callback_info info) {
  poll_watch *watch = get_watch(env, info);
  if (watch && !watch->closing) {
    watch->closing = 1;
    uv_poll_stop(&watch->poll);
    napi_delete_reference(env, watch->callback);
    napi_async_destroy(env, watch->context);
    uv_close((uv_handle_t *)&watch->poll, on_closed);
  }
  return NULL;
}

napi_status tap_register(napi_env env, napi_value exports) {
  const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {
      {"tapOpen", tap_open},       {"tapSetOffload", tap_set_offload}, {"tapRead", tap_read},
      {"tapWrite", tap_write},     {"tapClose", tap_close},            {"pollStart", poll_start},          {"pollStop", poll_stop},
      {"pollResume", poll_resume}, {"pollClose", poll_close},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    napi_status status = napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn);
    if (status != napi_ok) return status;
    status = napi_set_named_property(env, exports, functions[i].name, fn);
    if (status != napi_ok) return status;
  }
  const struct {
    const char *name;
    int value;
  } constants[] = {
      {"TUN_F_CSUM", TUN_F_CSUM}, {"TUN_F_TSO4", TUN_F_TSO4}, {"TUN_F_TSO6", TUN_F_TSO6},
      {"TUN_F_TSO_ECN", TUN_F_TSO_ECN}, {"EAGAIN", EAGAIN},
  };
  for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
    napi_value v;
    napi_status status = napi_create_int32(env, constants[i].value, &v);
    if (status != napi_ok) return status;
    status = napi_set_named_property(env, exports, constants[i].name, v);
    if (status != napi_ok) return status;
  }
  return napi_ok;
}
