{
  "targets": [
    {
      "target_name": "hvkit_native",
      "sources": ["fallocate.c", "tap.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
