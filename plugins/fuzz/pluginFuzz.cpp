/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * pluginFuzz.cpp: fuzz driver of libstn_deploy_plugins.so, through its exported entry points only
 * (getCreators / setLoggerFinder, as TensorRT uses them, and the C kernel API):
 *   - random field collections (valid, out of range, wrong type or length, NULL data or name,
 *     unknown, duplicated, missing, negative counts) through both creators' createPlugin;
 *     a NULL plugin must come with a logged error naming the problem;
 *   - on created plugins: random input counts, ranks (0..8), constant and symbolic dimensions
 *     through getOutputShapes; random DataTypes through getOutputDataTypes; random positions,
 *     types and formats through supportsFormatCombination; configurePlugin and onShapeChange
 *     with random descriptors; getFieldsToSerialize round-tripped through createPlugin; clone;
 *   - random StnSampleDesc through stn_validate_desc, and the CPU reference on small random
 *     tensors with NaN/inf/huge coordinates (under AddressSanitizer this checks every read).
 * No CUDA call is made (enqueue is not fuzzed): it runs on machines without a GPU.
 *
 *   stn_plugin_fuzz [iterations=10000] [seed=1]   -> exit 0 and "... 0 crashes, 0 violations"
 */
#include "NvInferRuntime.h"
#include "stnKernelApi.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace fuzz
{
using namespace nvinfer1;

class CountingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            ++errors;
            last = msg != nullptr ? msg : "";
        }
        if (std::getenv("STN_FUZZ_VERBOSE") != nullptr)
        {
            std::printf("log[%d] %s\n", static_cast<int>(severity), msg);
        }
    }
    int64_t errors{0};
    std::string last;
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &logger;
    }
    CountingLogger logger;
};

//! A dimension expression: constant or symbolic.
class DimImpl : public apiv::VDimensionExpr
{
public:
    DimImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override
    {
        return mConstant;
    }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : -1;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    bool mConstant;
    int64_t mValue;
};

class Dim : public IDimensionExpr
{
public:
    Dim(bool constant, int64_t value)
        : mDim(constant, value)
    {
        mImpl = &mDim;
    }
    ~Dim() noexcept override = default;

private:
    DimImpl mDim;
};

class Builder : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        dims.emplace_back(true, value);
        return &dims.back();
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        dims.emplace_back(false, -1);
        return &dims.back();
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
    IDimensionExpr const* symbolic()
    {
        dims.emplace_back(false, -1);
        return &dims.back();
    }
    std::deque<Dim> dims;
};

class ExprBuilder : public IExprBuilder
{
public:
    explicit ExprBuilder(Builder* impl)
    {
        mImpl = impl;
    }
    ~ExprBuilder() noexcept override = default;
};

struct Rng
{
    std::mt19937_64 gen;
    int64_t uniform(int64_t lo, int64_t hi)
    {
        return std::uniform_int_distribution<int64_t>(lo, hi)(gen);
    }
    bool chance(double p)
    {
        return std::uniform_real_distribution<double>(0.0, 1.0)(gen) < p;
    }
    int64_t interesting()
    {
        static int64_t const values[] = {0, 1, 2, 3, 4, 5, -1, -2, 7, 100, 2147483647, -2147483647 - 1,
            std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(), 65536, 46341};
        return chance(0.5) ? values[uniform(0, 15)] : uniform(-10, 40);
    }
};

//! Storage for one random field collection.
struct Fields
{
    std::vector<std::string> names;
    std::vector<std::vector<uint8_t>> data;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};
};

char const* const kNAMES[] = {"interpolation_mode", "padding_mode", "align_corners", "transform", "out_d", "out_h",
    "out_w", "plugin_version", "bogus", ""};

//! Half the time a valid set (every field of the creator, valid values, random order subset for
//! the optional ones); otherwise each field independently mutated (name, value, type, length, data).
void makeFields(Rng& r, int32_t creator, Fields& f)
{
    bool const clean = r.chance(0.5);
    int32_t const known = creator == 0 ? 3 : 7;
    int32_t const count = clean ? known : static_cast<int32_t>(r.uniform(0, 9));
    f.names.clear();
    f.data.clear();
    f.fields.clear();
    f.names.reserve(count);
    f.data.reserve(count);
    for (int32_t i = 0; i < count; ++i)
    {
        int32_t nameIdx = clean ? i : static_cast<int32_t>(r.chance(0.85) ? r.uniform(0, known - 1) : r.uniform(0, 9));
        if (clean && i < 3 && r.chance(0.2))
        {
            nameIdx = 8; // an unknown name among valid ones: ignored with a warning
        }
        f.names.emplace_back(kNAMES[nameIdx]);
        PluginFieldType type = PluginFieldType::kINT32;
        int32_t length = 1;
        int64_t value = 0;
        switch (nameIdx)
        {
        case 0: case 1: value = r.uniform(0, 2); break;           // modes
        case 2: case 3: value = r.uniform(0, 1); break;           // align_corners, transform
        case 4: value = r.chance(0.6) ? 0 : r.uniform(1, 6); break; // out_d
        default: value = r.uniform(1, 9); break;                   // out_h, out_w, others
        }
        if (!clean)
        {
            if (r.chance(0.3))
            {
                value = r.interesting();
            }
            if (r.chance(0.1))
            {
                type = static_cast<PluginFieldType>(r.uniform(0, 14));
            }
            if (r.chance(0.05))
            {
                length = static_cast<int32_t>(r.uniform(-2, 3));
            }
        }
        std::vector<uint8_t> bytes(16, 0);
        switch (type)
        {
        case PluginFieldType::kINT64: std::memcpy(bytes.data(), &value, 8); break;
        case PluginFieldType::kINT8:
        {
            int8_t v = static_cast<int8_t>(value);
            std::memcpy(bytes.data(), &v, 1);
            break;
        }
        case PluginFieldType::kINT16:
        {
            int16_t v = static_cast<int16_t>(value);
            std::memcpy(bytes.data(), &v, 2);
            break;
        }
        case PluginFieldType::kFLOAT32:
        {
            float v = static_cast<float>(value);
            std::memcpy(bytes.data(), &v, 4);
            break;
        }
        default:
        {
            int32_t v = static_cast<int32_t>(value);
            std::memcpy(bytes.data(), &v, 4);
            break;
        }
        }
        f.data.push_back(bytes);
        void const* ptr = (!clean && r.chance(0.03)) ? nullptr : f.data.back().data();
        char const* name = (!clean && r.chance(0.02)) ? nullptr : f.names.back().c_str();
        f.fields.emplace_back(name, ptr, type, length);
    }
    f.fc.nbFields = (!clean && r.chance(0.01)) ? -1 : count;
    f.fc.fields = f.fields.empty() ? nullptr : f.fields.data();
}

DataType randomType(Rng& r)
{
    static DataType const common[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
    return r.chance(0.7) ? common[r.uniform(0, 2)] : static_cast<DataType>(r.uniform(0, 12));
}

TensorFormat randomFormat(Rng& r)
{
    return r.chance(0.8) ? TensorFormat::kLINEAR : static_cast<TensorFormat>(r.uniform(0, 20));
}

Dims randomDims(Rng& r, int32_t rank)
{
    Dims d{};
    d.nbDims = rank;
    for (int32_t i = 0; i < rank && i < Dims::MAX_DIMS; ++i)
    {
        d.d[i] = r.chance(0.8) ? r.uniform(0, 9) : r.interesting();
    }
    return d;
}

int32_t plausibleRank(Rng& r, int32_t input)
{
    if (r.chance(0.15))
    {
        return static_cast<int32_t>(r.uniform(0, 8));
    }
    if (input == 1 && r.chance(0.5))
    {
        return 3; // theta
    }
    return r.chance(0.5) ? 4 : 5;
}

struct Stats
{
    int64_t created{0}, rejected{0}, shapeOk{0}, shapeRejected{0}, descRuns{0}, violations{0};
};

void violation(Stats& s, std::string const& what)
{
    ++s.violations;
    std::printf("VIOLATION: %s\n", what.c_str());
}

void exercisePlugin(Rng& r, IPluginCreatorV3One* creator, IPluginV3* plugin, Finder& finder, Stats& s)
{
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (core == nullptr || build == nullptr || runtime == nullptr)
    {
        violation(s, "missing capability interface");
        return;
    }
    if (std::strcmp(core->getPluginName(), creator->getPluginName()) != 0 || std::strcmp(core->getPluginVersion(), "1") != 0)
    {
        violation(s, "plugin name/version differ from the creator's");
    }
    (void) plugin->getCapabilityInterface(static_cast<PluginCapabilityType>(r.uniform(3, 100)));

    for (int32_t round = 0; round < 3; ++round)
    {
        // Shapes.
        Builder impl;
        ExprBuilder eb(&impl);
        int32_t const nbInputs = r.chance(0.9) ? 2 : static_cast<int32_t>(r.uniform(0, 3));
        int32_t const nbOutputs = r.chance(0.95) ? 1 : static_cast<int32_t>(r.uniform(0, 2));
        DimsExprs inputs[3]{};
        auto dim = [&]() { return r.chance(0.3) ? impl.symbolic() : eb.constant(r.chance(0.9) ? r.uniform(1, 9) : r.interesting()); };
        if (r.chance(0.6))
        {
            // Consistent shapes: X [N,C,(D,)H,W], grid [N,(Do,)Ho,Wo,r-2] or theta [N,rows,cols].
            int32_t const rank = static_cast<int32_t>(r.uniform(4, 5));
            IDimensionExpr const* n = dim();
            inputs[0].nbDims = rank;
            inputs[0].d[0] = n;
            for (int32_t k = 1; k < rank; ++k)
            {
                inputs[0].d[k] = dim();
            }
            bool const theta = r.chance(0.5);
            if (theta)
            {
                inputs[1].nbDims = 3;
                inputs[1].d[0] = n;
                inputs[1].d[1] = eb.constant(rank == 5 ? 3 : r.uniform(2, 3));
                inputs[1].d[2] = eb.constant(rank == 5 ? 4 : 3);
            }
            else
            {
                inputs[1].nbDims = rank;
                inputs[1].d[0] = n;
                for (int32_t k = 1; k < rank - 1; ++k)
                {
                    inputs[1].d[k] = dim();
                }
                inputs[1].d[rank - 1] = eb.constant(rank - 2);
            }
            inputs[2] = inputs[1];
        }
        else
        {
            for (int32_t i = 0; i < 3; ++i)
            {
                inputs[i].nbDims = plausibleRank(r, i);
                for (int32_t k = 0; k < inputs[i].nbDims; ++k)
                {
                    inputs[i].d[k] = dim();
                }
            }
        }
        DimsExprs outputs[2]{};
        int32_t const rc = build->getOutputShapes(inputs, nbInputs, nullptr, 0, outputs, nbOutputs, eb);
        if (rc == 0)
        {
            ++s.shapeOk;
            if (outputs[0].nbDims < 4 || outputs[0].nbDims > 5)
            {
                violation(s, "getOutputShapes succeeded with output rank " + std::to_string(outputs[0].nbDims));
            }
            for (int32_t k = 0; k < outputs[0].nbDims && k < Dims::MAX_DIMS; ++k)
            {
                if (outputs[0].d[k] == nullptr)
                {
                    violation(s, "getOutputShapes left a NULL output dimension");
                }
            }
        }
        else
        {
            ++s.shapeRejected;
        }

        // Types.
        DataType inTypes[3] = {randomType(r), randomType(r), randomType(r)};
        DataType outTypes[2] = {DataType::kFLOAT, DataType::kFLOAT};
        int64_t const before = finder.logger.errors;
        int32_t const trc = build->getOutputDataTypes(outTypes, nbOutputs, inTypes, nbInputs);
        if (trc != 0 && finder.logger.errors == before)
        {
            violation(s, "getOutputDataTypes failed without a logged error");
        }
        if (trc == 0 && outTypes[0] != inTypes[0])
        {
            violation(s, "output dtype differs from X");
        }

        // Formats.
        DynamicPluginTensorDesc io[3]{};
        for (int32_t i = 0; i < 3; ++i)
        {
            io[i].desc.dims = randomDims(r, plausibleRank(r, i));
            io[i].desc.type = randomType(r);
            io[i].desc.format = randomFormat(r);
            io[i].min = io[i].desc.dims;
            io[i].max = io[i].desc.dims;
            io[i].opt = io[i].desc.dims;
        }
        for (int32_t pos = -1; pos < 4; ++pos)
        {
            bool const ok = build->supportsFormatCombination(pos, io, nbInputs, nbOutputs);
            if (ok && (pos < 0 || pos > 2 || io[pos].desc.format != TensorFormat::kLINEAR))
            {
                violation(s, "supportsFormatCombination accepted pos " + std::to_string(pos) + " or a non-linear format");
            }
        }
        (void) build->configurePlugin(io, nbInputs, io + 2, nbOutputs);
        (void) build->getNbOutputs();
        (void) build->getWorkspaceSize(io, nbInputs, io + 2, nbOutputs);

        // Runtime-side shape checks (CPU only: no enqueue); consistent descriptors when the shape
        // functions accepted constant shapes.
        PluginTensorDesc rt[3] = {io[0].desc, io[1].desc, io[2].desc};
        if (rc == 0 && r.chance(0.7))
        {
            for (int32_t i = 0; i < 2; ++i)
            {
                rt[i].dims.nbDims = inputs[i].nbDims;
                for (int32_t k = 0; k < inputs[i].nbDims; ++k)
                {
                    rt[i].dims.d[k] = inputs[i].d[k]->isConstant() ? inputs[i].d[k]->getConstantValue() : r.uniform(0, 5);
                }
            }
            rt[2].dims.nbDims = outputs[0].nbDims;
            for (int32_t k = 0; k < outputs[0].nbDims; ++k)
            {
                rt[2].dims.d[k] = outputs[0].d[k]->isConstant() ? outputs[0].d[k]->getConstantValue() : r.uniform(0, 5);
            }
        }
        (void) runtime->onShapeChange(rt, nbInputs, rt + 2, nbOutputs);
    }

    // Serialisation round trip.
    PluginFieldCollection const* serial = runtime->getFieldsToSerialize();
    if (serial == nullptr)
    {
        violation(s, "getFieldsToSerialize returned NULL");
        return;
    }
    std::unique_ptr<IPluginV3> again(creator->createPlugin("again", serial, TensorRTPhase::kRUNTIME));
    if (!again)
    {
        violation(s, "createPlugin rejected the plugin's own serialised fields");
        return;
    }
    auto* rt2 = static_cast<IPluginV3OneRuntime*>(again->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* serial2 = rt2->getFieldsToSerialize();
    bool same = serial2->nbFields == serial->nbFields;
    for (int32_t i = 0; same && i < serial->nbFields; ++i)
    {
        same = std::strcmp(serial->fields[i].name, serial2->fields[i].name) == 0
            && *static_cast<int32_t const*>(serial->fields[i].data) == *static_cast<int32_t const*>(serial2->fields[i].data);
    }
    if (!same)
    {
        violation(s, "serialised fields do not round-trip");
    }
    std::unique_ptr<IPluginV3> copy(plugin->clone());
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    if (!copy || !attached)
    {
        violation(s, "clone/attachToContext returned NULL");
    }
}

void fuzzDesc(Rng& r, Stats& s)
{
    StnSampleDesc d{};
    d.rank = r.chance(0.9) ? static_cast<int32_t>(r.uniform(4, 5)) : static_cast<int32_t>(r.interesting());
    d.interpolation_mode = r.chance(0.9) ? static_cast<int32_t>(r.uniform(0, 2)) : static_cast<int32_t>(r.interesting());
    d.padding_mode = r.chance(0.9) ? static_cast<int32_t>(r.uniform(0, 2)) : static_cast<int32_t>(r.interesting());
    d.align_corners = r.chance(0.9) ? static_cast<int32_t>(r.uniform(0, 1)) : static_cast<int32_t>(r.interesting());
    d.transform = r.chance(0.9) ? static_cast<int32_t>(r.uniform(0, 1)) : static_cast<int32_t>(r.interesting());
    d.semantics = static_cast<int32_t>(r.uniform(-2, 3));
    d.x_dtype = static_cast<int32_t>(r.uniform(-1, 3));
    d.coord_dtype = r.chance(0.5) ? 0 : d.x_dtype;
    d.n = r.chance(0.9) ? r.uniform(0, 3) : r.interesting();
    d.c = r.chance(0.9) ? r.uniform(0, 4) : r.interesting();
    d.in_d = d.rank == 4 ? 1 : (r.chance(0.9) ? r.uniform(0, 5) : r.interesting());
    d.in_h = r.chance(0.9) ? r.uniform(0, 6) : r.interesting();
    d.in_w = r.chance(0.9) ? r.uniform(0, 6) : r.interesting();
    d.out_d = d.rank == 4 ? 1 : (r.chance(0.9) ? r.uniform(0, 4) : r.interesting());
    d.out_h = r.chance(0.9) ? r.uniform(0, 5) : r.interesting();
    d.out_w = r.chance(0.9) ? r.uniform(0, 5) : r.interesting();
    bool const fused = r.chance(0.5);
    if (stn_validate_desc(&d, fused) != STN_OK)
    {
        if (std::strlen(stn_last_error()) == 0)
        {
            violation(s, "stn_validate_desc failed without a message");
        }
        return;
    }
    // Validated: no product of the shape overflows, but keep the test tensors small.
    int64_t const dims[8] = {d.n, d.c, d.in_d, d.in_h, d.in_w, d.out_d, d.out_h, d.out_w};
    for (int64_t v : dims)
    {
        if (v > 64)
        {
            return;
        }
    }
    if (d.n * d.c * d.in_d * d.in_h * d.in_w > 20000)
    {
        return;
    }
    int64_t const inVol = d.n * d.c * d.in_d * d.in_h * d.in_w;
    int64_t const outVol = d.n * d.c * d.out_d * d.out_h * d.out_w;
    int64_t const coordVol = fused ? d.n * 12 : d.n * d.out_d * d.out_h * d.out_w * 3;
    if (inVol > 20000 || outVol > 20000 || coordVol > 20000)
    {
        return;
    }
    int32_t const elem = d.x_dtype == STN_DTYPE_FLOAT32 ? 4 : 2;
    int32_t const celem = d.coord_dtype == STN_DTYPE_FLOAT32 ? 4 : 2;
    // Exact-size buffers so that AddressSanitizer sees any out-of-bounds access.
    std::unique_ptr<uint8_t[]> x(new uint8_t[std::max<int64_t>(1, inVol * elem)]);
    int64_t const coordCount = fused ? d.n * (d.rank == 5 ? 12 : (d.transform == 1 ? 9 : 6))
                                     : d.n * d.out_d * d.out_h * d.out_w * (d.rank - 2);
    std::unique_ptr<uint8_t[]> coords(new uint8_t[std::max<int64_t>(1, coordCount * celem)]);
    std::unique_ptr<uint8_t[]> out(new uint8_t[std::max<int64_t>(1, outVol * elem)]);
    for (int64_t i = 0; i < inVol * elem; ++i)
    {
        x[i] = static_cast<uint8_t>(r.uniform(0, 255));
    }
    static float const special[] = {NAN, INFINITY, -INFINITY, 1e20f, -1e20f, 0.5f, -0.5f, 1.0f, -1.0f, 0.0f};
    for (int64_t i = 0; i < coordCount; ++i)
    {
        float const v = r.chance(0.2) ? special[r.uniform(0, 9)]
                                      : static_cast<float>(std::uniform_real_distribution<double>(-1.5, 1.5)(r.gen));
        if (celem == 4)
        {
            std::memcpy(coords.get() + i * 4, &v, 4);
        }
        else
        {
            uint32_t u;
            std::memcpy(&u, &v, 4);
            uint16_t const h = static_cast<uint16_t>(u >> 16); // a bfloat16-style pattern; any bits are valid input
            std::memcpy(coords.get() + i * 2, &h, 2);
        }
    }
    int32_t const threads = static_cast<int32_t>(r.uniform(0, 3));
    int32_t const rc = fused ? stn_affine_grid_sample_cpu(&d, x.get(), coords.get(), out.get(), threads)
                             : stn_grid_sample_cpu(&d, x.get(), coords.get(), out.get(), threads);
    if (rc != STN_OK)
    {
        violation(s, std::string("CPU reference rejected a validated descriptor: ") + stn_last_error());
    }
    ++s.descRuns;
}

} // namespace fuzz

int main(int argc, char** argv)
{
    using namespace fuzz;
    int64_t const iterations = argc > 1 ? std::atoll(argv[1]) : 10000;
    uint64_t const seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
    Finder finder;
    setLoggerFinder(&finder);
    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    if (creators == nullptr || nbCreators != 2)
    {
        std::printf("getCreators returned %d creators\n", nbCreators);
        return 1;
    }
    Rng r{std::mt19937_64(seed)};
    Stats s;
    Fields f;
    for (int64_t it = 0; it < iterations; ++it)
    {
        int32_t const which = static_cast<int32_t>(r.uniform(0, 1));
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[which]);
        (void) creator->getFieldNames();
        makeFields(r, which, f);
        PluginFieldCollection const* fc = r.chance(0.02) ? nullptr : &f.fc;
        int64_t const before = finder.logger.errors;
        std::unique_ptr<IPluginV3> plugin(creator->createPlugin(
            "fuzz", fc, r.chance(0.5) ? TensorRTPhase::kBUILD : TensorRTPhase::kRUNTIME));
        if (!plugin)
        {
            ++s.rejected;
            if (finder.logger.errors == before)
            {
                violation(s, "createPlugin returned NULL without a logged error");
            }
        }
        else
        {
            ++s.created;
            exercisePlugin(r, creator, plugin.get(), finder, s);
        }
        fuzzDesc(r, s);
    }
    std::printf("stn_plugin_fuzz: %lld iterations (seed %llu): %lld plugins created, %lld rejected with a logged "
                "error; getOutputShapes %lld accepted / %lld rejected; %lld CPU reference runs; %lld logged errors; "
                "0 crashes, %lld violations\n",
        static_cast<long long>(iterations), static_cast<unsigned long long>(seed), static_cast<long long>(s.created),
        static_cast<long long>(s.rejected), static_cast<long long>(s.shapeOk), static_cast<long long>(s.shapeRejected),
        static_cast<long long>(s.descRuns), static_cast<long long>(finder.logger.errors),
        static_cast<long long>(s.violations));
    return s.violations == 0 ? 0 : 2;
}
