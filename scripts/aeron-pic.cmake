# Read by CMake when it configures Aeron's C code for rusteron (CMAKE_TOOLCHAIN_FILE, set in
# .cargo/config.toml). rusteron sets CMAKE_C_FLAGS without -fPIC, and static libraries built that
# way cannot be linked into a shared object: the Python module (a cdylib) embeds Aeron's client.
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
