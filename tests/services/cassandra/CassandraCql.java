// Runs CQL statements (one per argument) on a Cassandra node over TLS as a given user, with
// the DataStax Java driver among Cassandra's own jars: up.sh's way to create roles on the
// secured node, where cqlsh (Python) is not installed. Run as a single-file source program:
//   java -cp "<cassandra lib>/*" CassandraCql.java HOST PORT CA_PEM USER PASSWORD CQL...
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.RemoteEndpointAwareJdkSSLOptions;
import com.datastax.driver.core.Session;
import java.io.FileInputStream;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class CassandraCql {
    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println("usage: CassandraCql HOST PORT CA_PEM USER PASSWORD CQL...");
            System.exit(2);
        }
        // Trust exactly the test CA (PEM), verified as any TLS client would.
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(args[2])) {
            int i = 0;
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                trust.setCertificateEntry("ca" + i++, c);
            }
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(null, tmf.getTrustManagers(), null);
        try (Cluster cluster = Cluster.builder()
                .addContactPoint(args[0])
                .withPort(Integer.parseInt(args[1]))
                .withCredentials(args[3], args[4])
                .withSSL(RemoteEndpointAwareJdkSSLOptions.builder().withSSLContext(ssl).build())
                .withoutJMXReporting()
                .build();
             Session session = cluster.connect()) {
            for (int i = 5; i < args.length; i++) {
                session.execute(args[i]);
            }
        }
    }
}
