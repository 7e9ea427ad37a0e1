import CRelayCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// An answer of the admin API other than 2xx: a status and a message, sent as
/// `{"error": message}`.
struct AdminError: Error {
    let status: HTTPResponse.Status
    let message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// The admin API's handlers: HTTP + JSON under /api/v1/, read from the running core (live
/// state) and the store (what is provisioned), writing through the store and pushing each
/// change into the core before answering.
final class AdminAPI: Sendable {
    let store: DeviceStore
    let core: RelayCore
    let sync: DeviceSync
    let keys: AdminKeyCheck
    let logger: Logger

    /// Largest request body accepted (413 above).
    static let maxBody = 16 * 1024
    /// Devices per page: default and most.
    static let defaultLimit = 100
    static let maxLimit = 1000
    /// With an online filter, at most this many devices are looked at per request; the page
    /// then ends early with a `next` cursor to continue from.
    static let maxScan = 50_000
    /// Devices read from the store (and looked up in the core) per step of a filtered scan.
    static let scanChunk = 1000

    init(store: DeviceStore, core: RelayCore, sync: DeviceSync, keys: AdminKeyCheck, logger: Logger) {
        self.store = store
        self.core = core
        self.sync = sync
        self.keys = keys
        keys.core = core
        self.logger = logger
    }

    // MARK: routes

    /// Every route: method, path (Hummingbird's {param} syntax, as in the OpenAPI document).
    static let routes: [(HTTPRequest.Method, String)] = [
        (.get, "/api/v1/openapi.json"),
        (.get, "/api/v1/summary"),
        (.get, "/api/v1/devices"),
        (.post, "/api/v1/devices"),
        (.get, "/api/v1/devices/{id}"),
        (.delete, "/api/v1/devices/{id}"),
        (.post, "/api/v1/devices/{id}/secret"),
        (.get, "/api/v1/devices/{id}/tokens"),
        (.post, "/api/v1/devices/{id}/tokens"),
        (.get, "/api/v1/tokens"),
        (.delete, "/api/v1/tokens/{tid}"),
        (.get, "/api/v1/sessions"),
        (.delete, "/api/v1/sessions/{sid}"),
        (.post, "/api/v1/sync"),
    ]

    func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: AdminAuthMiddleware(keys: keys, logger: logger))
        // Every API route goes through here, so that the table the OpenAPI document is checked
        // against (`routes`) cannot miss one.
        var registered: [String] = []
        func route(
            _ method: HTTPRequest.Method, _ path: String,
            _ handler: @escaping @Sendable (Request, BasicRequestContext) async throws -> Response
        ) {
            registered.append("\(method) \(path)")
            router.on(RouterPath(path), method: method, use: handler)
        }
        router.get("/") { _, _ in Self.html(ConsolePage.html) }
        router.get("/console") { _, _ in Self.html(ConsolePage.html) }
        route(.get, "/api/v1/openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: AdminOpenAPI.document)))
        }
        route(.get, "/api/v1/summary") { _, _ in try self.guarded { try self.summary() } }
        route(.get, "/api/v1/devices") { request, _ in try self.guarded { try self.listDevices(request) } }
        route(.post, "/api/v1/devices") { request, _ in
            let body = try await Self.body(request)
            return try self.guarded { try self.addDevice(body) }
        }
        route(.get, "/api/v1/devices/{id}") { _, context in
            try self.guarded { try self.showDevice(try Self.param(context, "id")) }
        }
        route(.delete, "/api/v1/devices/{id}") { _, context in
            try self.guarded { try self.removeDevice(try Self.param(context, "id")) }
        }
        route(.post, "/api/v1/devices/{id}/secret") { _, context in
            try self.guarded { try self.rotateSecret(try Self.param(context, "id")) }
        }
        route(.get, "/api/v1/devices/{id}/tokens") { request, context in
            try self.guarded { try self.listTokens(device: try Self.param(context, "id"), request) }
        }
        route(.post, "/api/v1/devices/{id}/tokens") { request, context in
            let body = try await Self.body(request, allowEmpty: true)
            return try self.guarded { try self.mintToken(try Self.param(context, "id"), body) }
        }
        route(.get, "/api/v1/tokens") { request, _ in
            try self.guarded { try self.listTokens(device: request.uri.queryParameters.get("device"), request) }
        }
        route(.delete, "/api/v1/tokens/{tid}") { _, context in
            try self.guarded { try self.revokeToken(try Self.param(context, "tid")) }
        }
        route(.get, "/api/v1/sessions") { request, _ in
            try self.guarded { try self.listSessions(request) }
        }
        route(.delete, "/api/v1/sessions/{sid}") { _, context in
            try self.guarded { try self.endSession(try Self.param(context, "sid")) }
        }
        route(.post, "/api/v1/sync") { _, _ in
            let seq = await self.sync.syncNow()
            return try self.guarded {
                try self.core.barrier()
                return Self.json(.ok, ["seq": seq])
            }
        }
        precondition(
            registered.sorted() == Self.routes.map { "\($0.0) \($0.1)" }.sorted(),
            "AdminAPI.routes and the registered routes differ")
        return router
    }

    // MARK: handlers

    func summary() throws -> Response {
        let s = try core.summary()
        return Self.json(
            .ok,
            [
                "devices": s.devices, "online": s.online, "never_notified": s.neverNotified,
                "capacity": s.capacity, "sessions": s.sessions, "tracked": s.tracked,
                "period_s": s.periodSeconds, "unauthorized_requests": keys.refusedCount,
                "page_requests": s.pageRequests, "page_loop_us_total": s.pageLoopMicrosecondsTotal,
                "page_loop_us_max": s.pageLoopMicrosecondsMax, "summary_loop_us": s.summaryLoopMicroseconds, "summary_chunks": s.summaryChunks,
            ])
    }

    func listDevices(_ request: Request) throws -> Response {
        let q = request.uri.queryParameters
        var limit = Self.defaultLimit
        if let text = q.get("limit") {
            guard let n = Int(text), n >= 1, n <= Self.maxLimit else {
                throw AdminError(.badRequest, "limit must be a whole number from 1 to \(Self.maxLimit)")
            }
            limit = n
        }
        var online: Bool? = nil
        if let text = q.get("online") {
            switch text {
            case "true", "1": online = true
            case "false", "0": online = false
            default: throw AdminError(.badRequest, "online must be true or false")
            }
        }
        let after = q.get("after").flatMap { $0.isEmpty ? nil : $0 }
        let search = q.get("search").flatMap { $0.isEmpty ? nil : $0 }
        var out: [JSONValue] = []
        var cursor = after
        var scanned = 0
        var exhausted = false
        // Unfiltered: one store page and one core request. Filtered by online state: chunks of
        // the store, each looked up in the core, until the page is full or maxScan were seen.
        while out.count < limit, scanned < Self.maxScan {
            let want = online == nil ? limit - out.count : Self.scanChunk
            let page = try store.devicePage(after: cursor, limit: want, search: search)
            if page.isEmpty {
                exhausted = true
                break
            }
            let views = try core.inspect(ids: page.map(\.id))
            scanned += page.count
            for (device, view) in zip(page, views) {
                cursor = device.id
                if let online, view.online != online { continue }
                out.append(Self.deviceValue(device, view))
                if out.count == limit { break }
            }
            if page.count < want {
                exhausted = cursor == page.last?.id
                break
            }
        }
        // More may follow unless the store ran out exactly here.
        var next: JSONValue = .null
        if !exhausted, let cursor {
            if (try store.devicePage(after: cursor, limit: 1, search: search)).isEmpty == false { next = .string(cursor) }
        }
        return Self.json(.ok, JSONValue.object([("devices", .array(out)), ("next", next), ("scanned", .int(Int64(scanned)))]))
    }

    func showDevice(_ id: String) throws -> Response {
        guard let device = try store.device(id) else { throw AdminError(.notFound, "no device '\(id)'") }
        guard let view = try core.inspect(ids: [id]).first else { throw CoreUnavailable() }
        var body = Self.deviceJSON(device, view)
        if let history = try core.history(id: id) {
            body["address_history"] = history.addresses.map { ["at": Self.iso($0.atUnix), "address": $0.address] }
            body["wakes"] = history.wakes.map(Self.wakeJSON)
            body["tracked"] = history.tracked
        } else {
            body["address_history"] = []
            body["wakes"] = []
            body["tracked"] = false
        }
        body["session_list"] = try core.sessions(device: id, max: 100).sessions.map(Self.sessionJSON)
        body["tokens"] = try store.tokens(device: id).map(Self.tokenJSON)
        return Self.json(.ok, body)
    }

    func addDevice(_ body: [String: Any]) throws -> Response {
        guard let id = body["id"] as? String else { throw AdminError(.badRequest, "the body needs \"id\": a device ID") }
        guard RelayCrypto.isValidDeviceID(id) else {
            throw AdminError(.badRequest, DeviceStoreError.invalidDeviceID(id).description)
        }
        let secret: [UInt8]
        do {
            secret = try store.add(id: id)
        } catch DeviceStoreError.deviceExists(let id) {
            throw AdminError(.conflict, "device '\(id)' already exists")
        }
        // Usable when this returns: put into the core now, and wait for the loop to apply it
        // (the inspection is queued behind the put).
        let key = try store.key(for: id)
        guard core.put(id: id, key: key), try core.inspect(ids: [id]).first?.known == true else {
            try? store.remove(id: id)
            throw AdminError(HTTPResponse.Status(code: 507), "the registry is full (capacity \(configurationCapacity))")
        }
        logger.info("device.added", metadata: ["device": "\(id)", "via": "admin"])
        let created = try store.device(id)?.createdAt ?? Date()
        return Self.json(.created, ["id": id, "secret": Hex.encode(secret), "created": Self.iso(created)])
    }

    private var configurationCapacity: UInt64 { core.stats().capacity }

    func removeDevice(_ id: String) throws -> Response {
        do {
            try store.remove(id: id)
        } catch DeviceStoreError.noSuchDevice {
            throw AdminError(.notFound, "no device '\(id)'")
        }
        core.remove(id: id)
        try core.barrier()  // applied before the answer
        logger.info("device.removed", metadata: ["device": "\(id)", "via": "admin"])
        return Self.json(.ok, ["removed": id])
    }

    func rotateSecret(_ id: String) throws -> Response {
        let secret: [UInt8]
        do {
            secret = try store.rotateSecret(id: id)
        } catch DeviceStoreError.noSuchDevice {
            throw AdminError(.notFound, "no device '\(id)'")
        }
        core.put(id: id, key: try store.key(for: id))
        try core.barrier()
        logger.info("device.secret.rotated", metadata: ["device": "\(id)", "via": "admin"])
        return Self.json(.ok, ["id": id, "secret": Hex.encode(secret)])
    }

    func listTokens(device: String?, _ request: Request) throws -> Response {
        let all = request.uri.queryParameters.get("all") == "true"
        do {
            let tokens = try store.tokens(device: device, includeExpired: all)
            return Self.json(.ok, ["tokens": tokens.map(Self.tokenJSON)])
        } catch DeviceStoreError.noSuchDevice(let id) {
            throw AdminError(.notFound, "no device '\(id)'")
        }
    }

    func mintToken(_ id: String, _ body: [String: Any]) throws -> Response {
        var ttl = Duration.seconds(86_400)
        if let value = body["ttl"] {
            guard let text = value as? String, let parsed = try? Durations.parse(text), parsed >= .seconds(1) else {
                throw AdminError(.badRequest, "ttl must be a duration such as \"90\", \"30m\", \"24h\" or \"7d\"")
            }
            ttl = parsed
        }
        do {
            let token = try store.mintToken(id: id, ttl: ttl)
            let tid = Tokens.id(in: token) ?? ""
            let record = try store.tokens(device: id).first { $0.id == tid }
            return Self.json(
                .created,
                [
                    "token": token, "tid": tid, "device": id,
                    "expires": record.map { Self.iso($0.expiresAt) } ?? NSNull(),
                ])
        } catch DeviceStoreError.noSuchDevice(let id) {
            throw AdminError(.notFound, "no device '\(id)'")
        }
    }

    func revokeToken(_ tid: String) throws -> Response {
        let revoked: [String]
        do {
            revoked = try store.revokeTokens([tid])
        } catch DeviceStoreError.invalidTokenID(let text) {
            throw AdminError(.badRequest, "'\(text)' is not a token ID (16 hex digits)")
        } catch DeviceStoreError.noSuchToken(let id) {
            throw AdminError(.notFound, "no token \(id)")
        }
        // Refused by the core before the answer, not at the next sync.
        for token in try store.revokedTokens() where revoked.contains(token.id) { core.revoke(token) }
        try core.barrier()
        logger.info("token.revoked", metadata: ["tokens": "\(revoked.joined(separator: ","))", "via": "admin"])
        return Self.json(.ok, ["revoked": revoked])
    }

    func listSessions(_ request: Request) throws -> Response {
        let device = request.uri.queryParameters.get("device")
        let (sessions, total) = try core.sessions(device: device, max: 1000)
        return Self.json(.ok, ["sessions": sessions.map(Self.sessionJSON), "total": total])
    }

    func endSession(_ sid: String) throws -> Response {
        guard sid.count == 32, sid.allSatisfy(\.isHexDigit) else {
            throw AdminError(.badRequest, "a session ID is 32 hex digits")
        }
        guard try core.endSession(id: sid.lowercased()) else { throw AdminError(.notFound, "no session \(sid)") }
        logger.info("session.ended", metadata: ["session": "\(sid)", "via": "admin"])
        return Self.json(.ok, ["ended": sid.lowercased()])
    }

    // MARK: JSON shapes

    static func deviceJSON(_ device: DeviceSummary, _ view: DeviceLiveView) -> [String: Any] {
        [
            "id": device.id,
            "online": view.online,
            "last_notify_a_age_s": view.lastNotifyAAgeSeconds.map { $0 as Any } ?? NSNull(),
            "address": view.address.map { $0 as Any } ?? NSNull(),
            "address_changes": view.addressChanges,
            "sessions": view.sessions,
            "last_wake": view.lastWake.map { wakeJSON($0) as Any } ?? NSNull(),
            "offline_reason": view.offlineReason.map { $0 as Any } ?? NSNull(),
            "created": iso(device.createdAt),
        ]
    }

    /// The same fields as deviceJSON, for the list's hand-written JSON.
    static func deviceValue(_ device: DeviceSummary, _ view: DeviceLiveView) -> JSONValue {
        .object([
            ("address", .optional(view.address)),
            ("address_changes", .uint(UInt64(view.addressChanges))),
            ("created", .string(JSONValue.iso8601(unix: Int64(device.createdAt.timeIntervalSince1970)))),
            ("id", .string(device.id)),
            ("last_notify_a_age_s", view.lastNotifyAAgeSeconds.map { .int($0) } ?? .null),
            (
                "last_wake",
                view.lastWake.map {
                    .object([
                        ("at", .string(JSONValue.iso8601(unix: Int64($0.atUnix)))), ("latency_ms", .double(Double($0.latencyMicroseconds) / 1000)),
                        ("outcome", .string($0.outcome)),
                    ])
                } ?? .null
            ),
            ("offline_reason", .optional(view.offlineReason)),
            ("online", .bool(view.online)),
            ("sessions", .uint(UInt64(view.sessions))),
        ])
    }

    static func wakeJSON(_ w: WakeRecord) -> [String: Any] {
        ["at": iso(w.atUnix), "outcome": w.outcome, "latency_ms": Double(w.latencyMicroseconds) / 1000]
    }

    static func sessionJSON(_ s: LiveSession) -> [String: Any] {
        [
            "id": s.id, "device": s.device, "state": s.state, "age_ms": s.ageMilliseconds,
            "terminal": s.terminal.map { $0 as Any } ?? NSNull(), "bytes_to_device": s.bytesToDevice,
            "bytes_to_terminal": s.bytesToTerminal,
        ]
    }

    static func tokenJSON(_ t: TokenRecord) -> [String: Any] {
        [
            "tid": t.id, "device": t.device, "created": iso(t.createdAt), "expires": iso(t.expiresAt),
            "state": t.state(at: Date()).rawValue,
        ]
    }

    static func iso(_ date: Date) -> String {
        JSONValue.iso8601(unix: Int64(date.timeIntervalSince1970))
    }

    static func iso(_ unix: UInt64) -> String { iso(Date(timeIntervalSince1970: TimeInterval(unix))) }

    // MARK: plumbing

    static func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        var buffer = ByteBufferAllocator().buffer(capacity: data.count + 1)
        buffer.writeBytes(data)
        buffer.writeString("\n")
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: buffer))
    }

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4096)
        value.write(into: &bytes)
        bytes.append(UInt8(ascii: "\n"))
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: buffer))
    }

    static func html(_ text: String) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                HTTPField.Name("Content-Security-Policy")!:
                    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; frame-ancestors 'none'",
                HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            ],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func param(_ context: BasicRequestContext, _ name: String) throws -> String {
        guard let value = context.parameters.get(name) else { throw AdminError(.badRequest, "missing \(name)") }
        return value.removingPercentEncoding ?? value
    }

    /// A JSON object body (at most maxBody bytes).
    static func body(_ request: Request, allowEmpty: Bool = false) async throws -> [String: Any] {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxBody)
        } catch {
            throw AdminError(.contentTooLarge, "the body is larger than \(maxBody) bytes")
        }
        if buffer.readableBytes == 0 {
            if allowEmpty { return [:] }
            throw AdminError(.badRequest, "a JSON object body is needed")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)),
            let dict = object as? [String: Any]
        else { throw AdminError(.badRequest, "the body is not a JSON object") }
        return dict
    }

    /// Store and core failures as JSON answers.
    func guarded(_ body: () throws -> Response) throws -> Response {
        do {
            return try body()
        } catch let error as AdminError {
            throw error
        } catch let error as CoreUnavailable {
            throw AdminError(.serviceUnavailable, error.description)
        } catch {
            logger.warning("admin.request.failed", metadata: ["error": "\(error)"])
            throw AdminError(.internalServerError, "\(error)")
        }
    }
}

/// Checks `Authorization: Bearer <admin key>` on every request but the console page and the
/// OpenAPI document; turns AdminError and routing misses into JSON answers.
struct AdminAuthMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let keys: AdminKeyCheck
    let logger: Logger

    static let open: Set<String> = ["/", "/console", "/api/v1/openapi.json"]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let path = request.uri.path
        do {
            if !(request.method == .get && Self.open.contains(path)) {
                let header = request.headers[.authorization] ?? ""
                let prefix = "Bearer "
                guard header.hasPrefix(prefix), keys.check(String(header.dropFirst(prefix.count))) else {
                    keys.refused()
                    logger.warning(
                        "admin.unauthorized",
                        metadata: ["path": "\(path)", "reason": "\(header.isEmpty ? "no key" : "wrong key")"])
                    var response = AdminAPI.json(.unauthorized, ["error": "a valid admin key is needed (Authorization: Bearer <key>)"])
                    response.headers[.wwwAuthenticate] = "Bearer"
                    return response
                }
            }
            return try await next(request, context)
        } catch let error as AdminError {
            return AdminAPI.json(error.status, ["error": error.message])
        } catch let error as HTTPError where error.status == .notFound {
            return AdminAPI.json(.notFound, ["error": "no such route: \(request.method) \(path)"])
        } catch let error as HTTPError {
            return AdminAPI.json(error.status, ["error": error.body ?? "\(error.status)"])
        }
    }
}

/// The admin keys' hashes, read from the store and re-read when older than 250 ms, so that a
/// key made by `relay admin-key create` works, and a revoked one stops, within that.
final class AdminKeyCheck: @unchecked Sendable {
    private let store: DeviceStore
    private let lock = NSLock()
    private var hashes: [[UInt8]] = []
    private var loadedAt = ContinuousClock.now - .seconds(10)
    private var refusals: UInt64 = 0

    init(store: DeviceStore) {
        self.store = store
    }

    var refusedCount: UInt64 { lock.withLock { refusals } }

    /// Set once by AdminAPI: refusals are counted in the core's metrics too.
    var core: RelayCore? {
        get { lock.withLock { _core } }
        set { lock.withLock { _core = newValue } }
    }
    private var _core: RelayCore?

    func refused() {
        lock.withLock { refusals += 1 }
        core?.adminRefused()
    }

    func check(_ key: String) -> Bool {
        let hash = DeviceStore.adminKeyHash(key)
        // Re-read at most every 250 ms: a new key works, a revoked one stops, within that.
        let stale = lock.withLock { ContinuousClock.now - loadedAt > .milliseconds(250) }
        if stale, let fresh = try? store.adminKeyHashes() {
            lock.withLock {
                hashes = fresh
                loadedAt = ContinuousClock.now
            }
        }
        return matches(hash, lock.withLock { hashes })
    }

    /// Every stored hash is compared, each in constant time.
    private func matches(_ hash: [UInt8], _ candidates: [[UInt8]]) -> Bool {
        var found = false
        for candidate in candidates where candidate.count == hash.count {
            if rl_const_time_equal(candidate, hash, hash.count) == 1 { found = true }
        }
        return found
    }
}
