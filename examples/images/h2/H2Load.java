import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

/**
 * A real Java application from Debian's packages under a SQL load: the H2 database (libh2-java),
 * in memory. Fills a table of ROWS rows, then runs QUERIES point lookups and a GROUP BY.
 *
 * Usage: H2Load ROWS QUERIES
 */
public class H2Load {
    public static void main(String[] args) throws Exception {
        int rows = args.length > 0 ? Integer.parseInt(args[0]) : 200000;
        int queries = args.length > 1 ? Integer.parseInt(args[1]) : 20000;
        try (Connection c = DriverManager.getConnection("jdbc:h2:mem:sim;DB_CLOSE_DELAY=-1",
                "sa", "")) {
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TABLE t(id BIGINT PRIMARY KEY, grp INT, payload VARCHAR(200))");
                st.execute("INSERT INTO t SELECT X, MOD(X, 100), REPEAT('x', 100) || X"
                        + " FROM SYSTEM_RANGE(1, " + rows + ")");
            }
            long found = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT grp FROM t WHERE id = ?")) {
                for (int i = 0; i < queries; i++) {
                    ps.setLong(1, 1 + (i * 7919L) % rows);
                    try (ResultSet rs = ps.executeQuery()) {
                        if (rs.next()) {
                            found++;
                        }
                    }
                }
            }
            long groups = 0;
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT grp, COUNT(*) FROM t GROUP BY grp")) {
                while (rs.next()) {
                    groups++;
                }
            }
            System.out.println("H2Load: " + rows + " rows, " + found + " lookups found, "
                    + groups + " groups");
        }
    }
}
