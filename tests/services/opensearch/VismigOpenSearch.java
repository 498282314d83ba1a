// Boots one OpenSearch node from jars on the classpath, for vismig's integration tests.
//
// OpenSearch ships as a distribution archive that is not on Maven Central; what is there
// is the server jar and each module as a jar (transport-netty4-client, reindex-client, ...).
// A distribution loads modules from a modules/ directory with their own class loaders and
// a security manager; here the modules are ordinary classpath jars, so they are handed to
// Node's protected constructor as "classpath plugins" (the route the test framework takes).
//
// Usage: java -cp <jars>:<this> vismig.services.VismigOpenSearch HOME PLUGIN_CLASS...
//   HOME/config/opensearch.yml     node settings (written by up.sh)
//   HOME/config/log4j2.properties  logging (written by up.sh)
//   -Dvismig.pidfile=FILE          where to write this process's pid
// The process runs until it gets SIGTERM/SIGINT, then closes the node cleanly.
package vismig.services;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public final class VismigOpenSearch {

    /** Node's constructor that accepts classpath plugins is protected; this subclass exposes it. */
    private static final class ClasspathPluginNode extends Node {
        ClasspathPluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            // true = forbid private index settings, as a production node does.
            super(environment, plugins, true);
        }
    }

    private VismigOpenSearch() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: VismigOpenSearch HOME [PLUGIN_CLASS...]");
            System.exit(2);
        }
        // The pid file lets up.sh/down.sh find this process whatever wraps the java command.
        String pidfile = System.getProperty("vismig.pidfile");
        if (pidfile != null) {
            Files.writeString(Paths.get(pidfile), ProcessHandle.current().pid() + "\n");
        }

        Path home = Paths.get(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        if (!Files.isRegularFile(config.resolve("opensearch.yml"))) {
            System.err.println("VismigOpenSearch: missing " + config.resolve("opensearch.yml"));
            System.exit(2);
        }

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            plugins.add(Class.forName(args[i]).asSubclass(Plugin.class));
        }

        // path.home must be known before opensearch.yml is read; everything else comes from it.
        Settings initial = Settings.builder().put("path.home", home.toString()).build();
        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(initial, Collections.emptyMap(), config, () -> "vismig-opensearch");

        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        Node node = new ClasspathPluginNode(environment, plugins);

        // OpenSearch's own threads are daemon threads: the main thread keeps the JVM alive
        // until the shutdown hook has closed the node (flushing shards) on SIGTERM.
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "vismig-opensearch-shutdown"));

        node.start();
        System.out.println("VismigOpenSearch: node started");
        closed.await();
    }
}
