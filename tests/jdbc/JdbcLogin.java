// Logs in to a running Runnel with pgjdbc and prints one line: "ok <current_user> <ssl>" or
// "error <SQLSTATE> <message>". Usage: java JdbcLogin HOST PORT USER PASSWORD [CA_FILE]
// With CA_FILE the connection uses TLS with sslmode=verify-full against that root.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class JdbcLogin {
    public static void main(String[] args) {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/runnel";
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        if (args.length > 4) {
            props.setProperty("sslmode", "verify-full");
            props.setProperty("sslrootcert", args[4]);
        } else {
            props.setProperty("sslmode", "disable");
        }
        try (Connection conn = DriverManager.getConnection(url, props);
             Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT current_user")) {
            rs.next();
            System.out.println("ok " + rs.getString(1) + " " + (args.length > 4 ? "ssl" : "plain"));
        } catch (SQLException e) {
            System.out.println("error " + e.getSQLState() + " " + e.getMessage());
        }
    }
}
