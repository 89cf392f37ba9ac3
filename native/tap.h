/* The TAP part of hvkit's native addon (tap.c): adds its functions to the exports. */
#ifndef HVKIT_TAP_H
#define HVKIT_TAP_H
#include <node_api.h>
napi_status tap_register(napi_env env, napi_value exports);
#endif
