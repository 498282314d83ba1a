// Boots one Elasticsearch 7.17 node from jars on the classpath, for vismig's integration
// tests; the twin of opensearch/VismigOpenSearch.java (same approach, Elasticsearch's
// packages).
//
// Elasticsearch's distribution archive is not on Maven Central; the 7.x server jar and its
// modules as *-client jars are (8.x publishes no module jars). The modules are handed to
// Node's protected constructor as "classpath plugins", without a security manager.
//
// Usage: java -cp <jars>:<this> vismig.services.VismigElasticsearch HOME PLUGIN_CLASS...
//   HOME/config/elasticsearch.yml  node settings (written by up.sh)
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

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;

public final class VismigElasticsearch {

    /** Node's constructor that accepts classpath plugins is protected; this subclass exposes it. */
    private static final class ClasspathPluginNode extends Node {
        ClasspathPluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            // true = forbid private index settings, as a production node does.
            super(environment, plugins, true);
        }
    }

    private VismigElasticsearch() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: VismigElasticsearch HOME [PLUGIN_CLASS...]");
            System.exit(2);
        }
        // The pid file lets up.sh/down.sh find this process whatever wraps the java command.
        String pidfile = System.getProperty("vismig.pidfile");
        if (pidfile != null) {
            Files.writeString(Paths.get(pidfile), ProcessHandle.current().pid() + "\n");
        }

        Path home = Paths.get(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        if (!Files.isRegularFile(config.resolve("elasticsearch.yml"))) {
            System.err.println("VismigElasticsearch: missing " + config.resolve("elasticsearch.yml"));
            System.exit(2);
        }

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            plugins.add(Class.forName(args[i]).asSubclass(Plugin.class));
        }

        // path.home must be known before elasticsearch.yml is read; everything else comes from it.
        Settings initial = Settings.builder().put("path.home", home.toString()).build();
        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(initial, Collections.emptyMap(), config, () -> "vismig-elasticsearch");

        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        Node node = new ClasspathPluginNode(environment, plugins);

        // Elasticsearch's own threads are daemon threads: the main thread keeps the JVM alive
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
        }, "vismig-elasticsearch-shutdown"));

        node.start();
        System.out.println("VismigElasticsearch: node started");
        closed.await();
    }
}
