/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * abiDriver.cpp: loads a stand-in TensorRT runtime (standInRuntime.cpp) and the real plugin
 * library into one process the way Python and Polygraphy do (both RTLD_LOCAL, the runtime first),
 * then walks the routes of plugins/README.md and prints one JSON object for tests/test_plugin_abi.py:
 *
 *   abiDriver <stand-in runtime .so> <plugin .so>   the runtime is loaded first (TensorRT imported)
 *   abiDriver --after <soname> <plugin .so>          only the plugin is loaded; it must find and load
 *                                                    the runtime itself (pip's tensorrt_libs, ...)
 *
 * Built with -fsanitize=address,undefined by the test (not vptr: the stand-in's classes are by design
 * other declarations of the plugin's interfaces, so UBSan's type-identity check does not apply).
 */
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace
{
std::string json(char const* text)
{
    std::string out = "\"";
    for (char const* p = text != nullptr ? text : ""; *p != '\0'; ++p)
    {
        switch (*p)
        {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        default:
            if (static_cast<unsigned char>(*p) < 0x20)
            {
                char buf[8];
                std::snprintf(buf, sizeof(buf), "\\u%04x", *p);
                out += buf;
            }
            else
            {
                out += *p;
            }
        }
    }
    return out + "\"";
}

template <typename Fn>
Fn symbol(void* handle, char const* name)
{
    void* s = dlsym(handle, name);
    if (s == nullptr)
    {
        std::fprintf(stderr, "abiDriver: %s missing: %s\n", name, dlerror());
        std::exit(2);
    }
    return reinterpret_cast<Fn>(s);
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 3 && argc != 4)
    {
        std::fprintf(stderr, "usage: abiDriver <runtime.so> <plugin.so> | abiDriver --after <soname> <plugin.so>\n");
        return 2;
    }
    bool const after = std::strcmp(argv[1], "--after") == 0;
    char const* plugin = after ? argv[3] : argv[2];
    void* runtime = nullptr;
    if (!after)
    {
        runtime = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (runtime == nullptr)
        {
            std::fprintf(stderr, "abiDriver: %s\n", dlerror());
            return 2;
        }
    }
    void* library = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr)
    {
        std::fprintf(stderr, "abiDriver: %s\n", dlerror());
        return 2;
    }
    using Text = char const* (*) ();
    // Optional, so that a library from before it existed can be driven too (its report says "").
    auto registeredRuntime = reinterpret_cast<Text>(dlsym(library, "stn_registered_runtime"));
    std::string const registered = json(registeredRuntime != nullptr ? registeredRuntime() : "");
    if (after)
    {
        runtime = dlopen(argv[2], RTLD_NOW | RTLD_NOLOAD); // by soname: the copy the plugin loaded
        if (runtime == nullptr)
        {
            std::printf("{\"runtime_loaded\": false, \"registered_runtime\": %s}\n", registered.c_str());
            return 0;
        }
    }
    using Create = int32_t (*)(char const*, char const*, int32_t);
    auto calls = symbol<Text>(runtime, "standin_calls");
    auto messages = symbol<Text>(runtime, "standin_messages");
    auto reset = symbol<void (*)()>(runtime, "standin_reset");
    auto creators = symbol<Text>(runtime, "standin_creator_names");
    auto create = symbol<Create>(runtime, "standin_create_plugin");
    auto loadLibrary = symbol<int32_t (*)(char const*)>(runtime, "standin_load_library");

    std::string out = "{\"runtime_loaded\": true";
    out += ", \"registered_runtime\": " + registered;
    // 1. Registration at load time (Polygraphy --plugins, LD_PRELOAD, ctypes.CDLL).
    out += ", \"load_time\": {\"creators\": " + json(creators());
    int32_t const badAtLoad = create("STNGridSample", "interpolation_mode", 7);
    out += ", \"create_bad\": " + std::to_string(badAtLoad);
    out += ", \"messages\": " + json(messages()) + ", \"calls\": " + json(calls()) + "}";
    reset();
    // 2. IPluginRegistry::loadLibrary: setLoggerFinder + getCreators (which takes back step 1's).
    int32_t const loaded = loadLibrary(plugin);
    out += ", \"load_library\": {\"ok\": " + std::to_string(loaded) + ", \"creators\": " + json(creators());
    int32_t const bad = create("STNGridSample", "interpolation_mode", 7);
    int32_t const good = create("STNGridSample", "interpolation_mode", 2);
    out += ", \"create_bad\": " + std::to_string(bad) + ", \"create_good\": " + std::to_string(good);
    out += ", \"messages\": " + json(messages()) + ", \"calls\": " + json(calls()) + "}}";
    std::printf("%s\n", out.c_str());
    std::fflush(stdout);
    return 0;
}
