{
  "targets": [
    {
      "target_name": "hvkit_native",
      "sources": ["fallocate.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
