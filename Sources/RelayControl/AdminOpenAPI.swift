enum AdminOpenAPI {
    static let document = "{}"
}
