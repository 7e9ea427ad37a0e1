/// What `relay --version` prints.
public enum RelayVersion {
    public static let number = "0.1.0"
    public static let description = "relay \(number)"
}
