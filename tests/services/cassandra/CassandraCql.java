// Runs CQL statements (one per argument) on a Cassandra node over TLS as a given user, with
// the DataStax Java driver among Cassandra's own jars: up.sh's way to create roles on the
// secured node, where cqlsh (Python) is not installed. Run as a single-file source program:
//   java -cp "<cassandra lib>/*" CassandraCql.java HOST PORT CA_PEM CERT_PEM KEY_PEM USER PASSWORD CQL...
// CERT_PEM/KEY_PEM (PKCS#8, unencrypted): the client certificate the node requires.
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.RemoteEndpointAwareJdkSSLOptions;
import com.datastax.driver.core.Session;
import java.io.FileInputStream;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class CassandraCql {
    public static void main(String[] args) throws Exception {
        if (args.length < 8) {
            System.err.println("usage: CassandraCql HOST PORT CA_PEM CERT_PEM KEY_PEM USER PASSWORD CQL...");
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
        // The client certificate and its key.
        Certificate[] chain;
        try (FileInputStream in = new FileInputStream(args[3])) {
            chain = CertificateFactory.getInstance("X.509").generateCertificates(in).toArray(new Certificate[0]);
        }
        String pem = Files.readString(Path.of(args[4]))
                .replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        PrivateKey key = KeyFactory.getInstance("RSA").generatePrivate(new PKCS8EncodedKeySpec(Base64.getDecoder().decode(pem)));
        KeyStore keys = KeyStore.getInstance(KeyStore.getDefaultType());
        keys.load(null, null);
        keys.setKeyEntry("client", key, new char[0], chain);
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, new char[0]);
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        try (Cluster cluster = Cluster.builder()
                .addContactPoint(args[0])
                .withPort(Integer.parseInt(args[1]))
                .withCredentials(args[5], args[6])
                .withSSL(RemoteEndpointAwareJdkSSLOptions.builder().withSSLContext(ssl).build())
                .withoutJMXReporting()
                .build();
             Session session = cluster.connect()) {
            for (int i = 7; i < args.length; i++) {
                session.execute(args[i]);
            }
        }
    }
}
