/** The smallest Java application: what an OpenJDK "hello" image costs in memory. */
public class Hello {
    public static void main(String[] args) {
        System.out.println("Hello from Java " + System.getProperty("java.version")
                + (args.length > 0 ? " args=" + String.join(",", args) : ""));
    }
}
