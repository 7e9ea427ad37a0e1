import Foundation
import RelayControl

/// One input is one `relay serve --config` file: it is written to a file and loaded as the
/// relay loads it (Yams' strict check, swift-configuration's YAML provider, every key's
/// parse, cross-field validation). It must give a configuration or one ConfigurationError
/// on one line naming a key; anything else (a crash, a hang, a multi-line message that could
/// carry the file's content into a log) is a finding.
enum FuzzConfig {
    static let path = NSTemporaryDirectory() + "relay-fuzz-config-\(getpid()).yaml"

    static func run(_ bytes: UnsafeRawBufferPointer) {
        let file = fopen(path, "wb")!
        if let base = bytes.baseAddress { fwrite(base, 1, bytes.count, file) }
        fclose(file)
        let done = DispatchSemaphore(value: 0)
        let outcome = Outcome()
        Task {
            do {
                let layers = try await ConfigLayers.load(
                    file: path, schema: RelayConfiguration.schema, environmentPrefix: "RELAY_FUZZ_NONE_",
                    environment: [:])
                let configuration = try RelayConfiguration(layers: layers)
                try configuration.validate()
                _ = configuration.effectiveYAML()
            } catch {
                outcome.message = "\(error)"
            }
            done.signal()
        }
        done.wait()
        if let message = outcome.message {
            precondition(!message.isEmpty && !message.contains("\n"), "error not on one line: \(message)")
        }
    }

    final class Outcome: @unchecked Sendable {
        var message: String?
    }
}

/// Under libFuzzer (`-sanitize=fuzzer -DFUZZING`) it hands control to libFuzzer's driver;
/// otherwise it replays the files given as arguments (the seed corpus, a crash).
@main
struct FuzzConfigMain {
    static func main() {
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            FuzzConfig.run(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        })
        #else
        var count = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let bytes = readFileBytes(path) else {
                print("cannot read \(path)")
                exit(2)
            }
            bytes.withUnsafeBytes { FuzzConfig.run($0) }
            count += 1
        }
        print("fuzz-config: \(count) inputs replayed, no finding")
        #endif
    }
}

#if FUZZING
/// libFuzzer's entry for programs with their own main (SwiftPM names the executable's).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif
