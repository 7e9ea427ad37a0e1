// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "relay",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "relay", targets: ["relay"]),
        .executable(name: "relay-bench", targets: ["relay-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        // The config file (YAML) and RELAY_* environment variables under the flags.
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The admin API and console (`--admin`): HTTP + JSON on its own listener, TLS with the
        // relay's certificate. Control plane only; per-packet paths stay in C.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // The data plane: UDP ingest, registry, wakes, callbacks, HTTP front, splicing.
        // libevent, OpenSSL and http-parser stay inside; Swift sees include/relay_core.h only.
        .target(
            name: "CRelayCore",
            cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])],
            linkerSettings: [
                .linkedLibrary("event_core"),
                .linkedLibrary("event_pthreads"),
                .linkedLibrary("http_parser"),
                .linkedLibrary("ssl"),
                .linkedLibrary("crypto"),
                .linkedLibrary("pthread"),
            ]
        ),
        // libpq from Debian's libpq-dev: the PostgreSQL store of a cluster (`--store postgres://`).
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // The control plane: configuration, device store, tokens, lifecycle, logging.
        .target(
            name: "RelayControl",
            dependencies: [
                "CRelayCore",
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "relay",
            dependencies: [
                "RelayControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // relay-bench's hot loops: simulated devices (sendmmsg/recvmmsg from a few sockets on
        // 127.10.x.y), the bare recvmmsg baseline, terminals for wakes. See bench/README.md.
        .target(
            name: "CBench",
            dependencies: ["CRelayCore"],
            cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-deprecated-declarations"])],
            linkerSettings: [.linkedLibrary("crypto"), .linkedLibrary("pthread")]
        ),
        .executableTarget(
            name: "relay-bench",
            dependencies: [
                "CBench",
                "RelayControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The config file parser as a libFuzzer target (`make fuzz`, built with -DFUZZING);
        // in a plain build it replays the inputs given as arguments.
        .executableTarget(
            name: "fuzz-config",
            dependencies: ["RelayControl"]
        ),
        .testTarget(
            name: "RelayControlTests",
            dependencies: ["RelayControl", "CRelayCore"]
        ),
    ]
)
