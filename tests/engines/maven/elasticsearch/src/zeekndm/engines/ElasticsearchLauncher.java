package zeekndm.engines;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.node.BareNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.transport.netty4.Netty4Plugin;

/**
 * One bare Elasticsearch node in the foreground: {@code ElasticsearchLauncher HOME HTTP_PORT}.
 *
 * <p>Server plus the transport-netty4 module (HTTP and transport), and our GET / handler.
 * Once the HTTP transport is bound its port is written to HOME/http.port (port 0 picks a free
 * one). SIGTERM runs the shutdown hook, which closes the node before the JVM exits; so does
 * the end of standard input, so a test run that dies without stopping its engines leaves no
 * node behind.
 */
public final class ElasticsearchLauncher {
    public static void main(String[] args) throws Exception {
        // Elasticsearch's own logging facade needs its provider set before any class logs;
        // log4j-core itself reads -Dlog4j2.configurationFile (written by tests/engines).
        LogConfigurator.configureESLogging();
        Path home = Path.of(args[0]).toAbsolutePath();
        String httpPort = args[1];
        String nodeName = "elasticsearch-test";
        Settings settings = Settings.builder()
            .put("cluster.name", "zeekndm-test")
            .put("node.name", nodeName)
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
        Files.createDirectories(home.resolve("config"));
        Node node = new BareNode(new Environment(settings, home.resolve("config")), List.of(Netty4Plugin.class));
        node.injector().getInstance(RestController.class)
            .registerHandler(new RootHandler(node.injector().getInstance(ClusterService.class), nodeName));
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
