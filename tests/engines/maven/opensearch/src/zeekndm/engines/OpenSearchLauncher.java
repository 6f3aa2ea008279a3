package zeekndm.engines;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * One OpenSearch node in the foreground: {@code OpenSearchLauncher HOME HTTP_PORT}.
 *
 * <p>Modules come from the classpath (there is no distribution to hold a modules/
 * directory); zip plugins are whatever tests/engines unpacked into HOME/plugins before the
 * start, loaded by OpenSearch in their own class loaders as in a real installation. Once the
 * HTTP transport is bound its port is written to HOME/http.port (port 0 picks a free one).
 * SIGTERM runs the shutdown hook, which closes the node (flushes shards, releases the
 * data directory lock) before the JVM exits. The JVM also exits (through the same hook) when
 * its standard input closes, so a test run that dies without stopping its engines leaves no
 * node behind.
 */
public final class OpenSearchLauncher {
    /** Node's constructor that takes classpath plugins is protected. */
    static final class TestNode extends Node {
        TestNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        String httpPort = args[1];
        Settings settings = Settings.builder()
            .put("cluster.name", "zeekndm-test")
            .put("node.name", "opensearch-test")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", "0")
            .put("discovery.type", "single-node")
            // a test disk may be nearly full; a test heap is small
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("indices.breaker.total.use_real_memory", false)
            .build();
        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), home.resolve("config"), () -> "opensearch-test");
        Files.createDirectories(environment.pluginsFile());
        Files.createDirectories(environment.modulesFile());
        List<Class<? extends Plugin>> modules =
            List.of(Netty4Plugin.class, CommonAnalysisPlugin.class, MapperExtrasPlugin.class);
        Node node = new TestNode(environment, modules);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "zeekndm-engine-shutdown"));
        exitWhenStdinCloses();
        node.start();
        int port = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().getPort();
        Path tmp = home.resolve("http.port.tmp");
        Files.writeString(tmp, Integer.toString(port));
        Files.move(tmp, home.resolve("http.port"), StandardCopyOption.ATOMIC_MOVE);
        closed.await(); // keeps the JVM alive until the shutdown hook has closed the node
    }

    static void exitWhenStdinCloses() {
        Thread watch = new Thread(() -> {
            try {
                while (System.in.read() != -1) {
                    // the parent writes nothing; only end of file matters
                }
            } catch (java.io.IOException e) {
                // a broken pipe means the same as end of file
            }
            System.exit(0);
        }, "zeekndm-parent-watch");
        watch.setDaemon(true);
        watch.start();
    }
}
