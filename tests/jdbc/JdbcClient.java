// pgjdbc (the PostgreSQL JDBC driver) against a running Runnel server: DDL, prepared INSERTs
// with typed parameters (server-side prepared statements from the first use, binary transfer
// where the driver chooses it), FLUSH, a view read back through a parameterised SELECT, result
// metadata, and SQLSTATEs of errors. Every expected value is computed here from the inputs.
//
// Usage: java -cp postgresql.jar:. JdbcClient HOST PORT   (exit status 0 = every check held)

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.TreeMap;

public class JdbcClient {
    private static int failures = 0;

    private static void check(boolean ok, String what) {
        if (!ok) {
            failures++;
            System.out.println("FAIL: " + what);
        } else {
            System.out.println("ok: " + what);
        }
    }

    private static void checkEquals(Object expected, Object actual, String what) {
        boolean same = expected == null ? actual == null : expected.equals(actual);
        check(same, what + " (expected " + expected + ", got " + actual + ")");
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/runnel";
        Properties props = new Properties();
        props.setProperty("user", "runnel");
        props.setProperty("password", "any");
        // Named server-side statements from the first execution, so Parse/Bind/Execute with
        // a reused statement is exercised at once.
        props.setProperty("prepareThreshold", "1");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            run(conn);
        }
        if (failures > 0) {
            System.out.println(failures + " check(s) failed");
            System.exit(1);
        }
        System.out.println("all checks passed");
    }

    private static void run(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE STREAM jdbc_events (user_id BIGINT, price DOUBLE PRECISION, "
                    + "label TEXT, ok BOOLEAN, ts TIMESTAMPTZ)");
            st.execute("CREATE TABLE jdbc_users (user_id BIGINT PRIMARY KEY, name TEXT)");
            st.execute("CREATE MATERIALIZED VIEW jdbc_per_user AS SELECT e.user_id, u.name, "
                    + "count(*) AS n, sum(e.price) AS total, max(e.ts) AS last_ts "
                    + "FROM jdbc_events e JOIN jdbc_users u ON e.user_id = u.user_id "
                    + "GROUP BY e.user_id, u.name");
        }

        // Model of what was written: user -> {count, total, last timestamp}.
        TreeMap<Long, double[]> model = new TreeMap<>();
        TreeMap<Long, String> names = new TreeMap<>();
        try (PreparedStatement ins = conn.prepareStatement(
                "INSERT INTO jdbc_users (user_id, name) VALUES (?, ?)")) {
            for (long u = 1; u <= 4; u++) {
                ins.setLong(1, u);
                ins.setString(2, "user " + u + (u == 3 ? " 'quoted'" : ""));
                checkEquals(1, ins.executeUpdate(), "insert user " + u);
                names.put(u, "user " + u + (u == 3 ? " 'quoted'" : ""));
            }
        }
        long base = Timestamp.valueOf("2026-06-10 10:00:00").getTime();
        try (PreparedStatement ins = conn.prepareStatement(
                "INSERT INTO jdbc_events VALUES (?, ?, ?, ?, ?)")) {
            for (int i = 0; i < 40; i++) {
                long user = 1 + (i % 5); // user 5 has no row in jdbc_users: not in the view
                double price = 0.25 * i + 1;
                Timestamp ts = new Timestamp(base + i * 60_000L);
                ins.setLong(1, user);
                ins.setDouble(2, price);
                ins.setString(3, "e" + i);
                ins.setBoolean(4, i % 2 == 0);
                ins.setTimestamp(5, ts);
                ins.addBatch();
                if (names.containsKey(user)) {
                    double[] m = model.computeIfAbsent(user, k -> new double[3]);
                    m[0] += 1;
                    m[1] += price;
                    m[2] = Math.max(m[2], ts.getTime());
                }
            }
            int[] counts = ins.executeBatch();
            checkEquals(40, counts.length, "batch statement count");
            int sum = 0;
            for (int c : counts) {
                sum += c;
            }
            checkEquals(40, sum, "batch rows inserted");
        }
        try (Statement st = conn.createStatement()) {
            st.execute("FLUSH");
        }

        try (PreparedStatement q = conn.prepareStatement(
                "SELECT user_id, name, n, total, last_ts FROM jdbc_per_user WHERE user_id >= ? "
                        + "ORDER BY user_id")) {
            q.setLong(1, 2);
            // Twice: the second run reuses the named statement.
            for (int run = 0; run < 2; run++) {
                List<Long> users = new ArrayList<>();
                try (ResultSet rs = q.executeQuery()) {
                    ResultSetMetaData md = rs.getMetaData();
                    checkEquals(5, md.getColumnCount(), "column count");
                    checkEquals(Types.BIGINT, md.getColumnType(1), "user_id is BIGINT");
                    checkEquals(Types.VARCHAR, md.getColumnType(2), "name is text");
                    checkEquals(Types.BIGINT, md.getColumnType(3), "count is BIGINT");
                    checkEquals(Types.DOUBLE, md.getColumnType(4), "sum is DOUBLE");
                    checkEquals(Types.TIMESTAMP, md.getColumnType(5), "max(ts) is a timestamp");
                    checkEquals("timestamptz", md.getColumnTypeName(5), "max(ts) type name");
                    while (rs.next()) {
                        long user = rs.getLong(1);
                        users.add(user);
                        double[] m = model.get(user);
                        checkEquals(names.get(user), rs.getString(2), "name of " + user);
                        checkEquals((long) m[0], rs.getLong(3), "count of " + user);
                        check(Math.abs(m[1] - rs.getDouble(4)) < 1e-9,
                                "total of " + user + " = " + m[1] + " (got " + rs.getDouble(4) + ")");
                        checkEquals((long) m[2], rs.getTimestamp(5).getTime(), "last ts of " + user);
                    }
                }
                checkEquals(new ArrayList<>(model.tailMap(2L).keySet()), users,
                        "users from 2 on (run " + run + ")");
            }
        }

        // Updates flow through the join into the view.
        try (PreparedStatement up = conn.prepareStatement(
                "UPDATE jdbc_users SET name = ? WHERE user_id = ?")) {
            up.setString(1, "renamed");
            up.setLong(2, 4);
            checkEquals(1, up.executeUpdate(), "update one user");
        }
        try (Statement st = conn.createStatement()) {
            st.execute("FLUSH");
            try (ResultSet rs = st.executeQuery(
                    "SELECT name, n FROM jdbc_per_user WHERE user_id = 4")) {
                check(rs.next(), "user 4 still in the view");
                checkEquals("renamed", rs.getString(1), "renamed user");
                checkEquals((long) model.get(4L)[0], rs.getLong(2), "renamed user's count");
                check(!rs.next(), "one row for user 4");
            }
        }

        // Errors carry SQLSTATEs, and the connection stays usable.
        expectState(conn, "SELECT nope FROM jdbc_events", "42703");
        expectState(conn, "SELECT * FROM no_such_relation", "42P01");
        expectState(conn, "INSERT INTO jdbc_users VALUES (1, 'again')", "23505");
        try (PreparedStatement q = conn.prepareStatement("SELECT count(*) FROM jdbc_events WHERE ok = ?")) {
            q.setBoolean(1, true);
            try (ResultSet rs = q.executeQuery()) {
                check(rs.next(), "count row");
                checkEquals(20L, rs.getLong(1), "events with ok = true");
            }
        }
        metadata(conn);
    }

    /** What DBeaver and other JDBC tools call to browse the database. */
    private static void metadata(Connection conn) throws SQLException {
        DatabaseMetaData md = conn.getMetaData();
        TreeMap<String, String> tables = new TreeMap<>();
        try (ResultSet rs = md.getTables(null, "public", "jdbc_%", null)) {
            while (rs.next()) {
                tables.put(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE"));
            }
        }
        // As against Postgres, with every type asked for, the primary key's index is listed too.
        checkEquals("{jdbc_events=TABLE, jdbc_per_user=MATERIALIZED VIEW, jdbc_users=TABLE, "
                + "jdbc_users_pkey=INDEX}", tables.toString(), "getTables");
        StringBuilder columns = new StringBuilder();
        try (ResultSet rs = md.getColumns(null, "public", "jdbc_users", null)) {
            while (rs.next()) {
                columns.append(rs.getInt("ORDINAL_POSITION")).append(':')
                        .append(rs.getString("COLUMN_NAME")).append(':')
                        .append(rs.getString("TYPE_NAME")).append(':')
                        .append(rs.getInt("NULLABLE")).append(' ');
            }
        }
        checkEquals("1:user_id:int8:0 2:name:text:1 ", columns.toString(), "getColumns");
        StringBuilder keys = new StringBuilder();
        try (ResultSet rs = md.getPrimaryKeys(null, "public", "jdbc_users")) {
            while (rs.next()) {
                keys.append(rs.getString("COLUMN_NAME")).append(':')
                        .append(rs.getInt("KEY_SEQ")).append(':')
                        .append(rs.getString("PK_NAME"));
            }
        }
        checkEquals("user_id:1:jdbc_users_pkey", keys.toString(), "getPrimaryKeys");
        // What DBeaver reads for a table's Indexes and Foreign Keys tabs.
        StringBuilder indexes = new StringBuilder();
        try (ResultSet rs = md.getIndexInfo(null, "public", "jdbc_users", false, false)) {
            while (rs.next()) {
                indexes.append(rs.getString("INDEX_NAME")).append(':')
                        .append(rs.getBoolean("NON_UNIQUE")).append(':')
                        .append(rs.getInt("ORDINAL_POSITION")).append(':')
                        .append(rs.getString("COLUMN_NAME")).append(':')
                        .append(rs.getString("ASC_OR_DESC"));
            }
        }
        checkEquals("jdbc_users_pkey:false:1:user_id:A", indexes.toString(), "getIndexInfo");
        try (ResultSet rs = md.getImportedKeys(null, "public", "jdbc_users")) {
            check(!rs.next(), "getImportedKeys: Runnel has no foreign keys");
        }
        TreeMap<String, String> schemas = new TreeMap<>();
        try (ResultSet rs = md.getSchemas()) {
            while (rs.next()) {
                schemas.put(rs.getString("TABLE_SCHEM"), "");
            }
        }
        check(schemas.containsKey("public") && schemas.containsKey("pg_catalog"), "getSchemas " + schemas);
    }

    private static void expectState(Connection conn, String sql, String state) {
        try (Statement st = conn.createStatement()) {
            st.execute(sql);
            check(false, sql + " should fail with " + state);
        } catch (SQLException e) {
            checkEquals(state, e.getSQLState(), "SQLSTATE of " + sql);
        }
    }
}
