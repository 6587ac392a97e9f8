#!/bin/sh
# Stands in for nasm while openh264 builds (.cargo/config.toml): assembles with HAVE_AVX2, as
# openh264's own Makefile does on x86 and the openh264-sys2 crate does not (its C++ side gets
# the same define from CXXFLAGS). The AVX2 routines are chosen at run time by CPU feature, so
# the build still runs on CPUs without AVX2.
exec nasm -DHAVE_AVX2 "$@"
