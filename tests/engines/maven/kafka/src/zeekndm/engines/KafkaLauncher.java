package zeekndm.engines;

import java.nio.file.Files;
import java.nio.file.Path;

import kafka.tools.StorageTool;

/**
 * One Kafka broker+controller (KRaft) in the foreground: {@code KafkaLauncher HOME CLUSTER_ID}.
 *
 * <p>HOME/server.properties is written by tests/engines (listeners on free ports). The log
 * directory is formatted in this JVM on first start (StorageTool, as kafka-storage.sh format
 * does), then kafka.Kafka runs; its own shutdown hook stops the broker on SIGTERM. The JVM
 * also exits when its standard input closes, so a test run that dies without stopping its
 * engines leaves no broker behind.
 */
public final class KafkaLauncher {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        String config = home.resolve("server.properties").toString();
        if (!Files.exists(home.resolve("data").resolve("meta.properties"))) {
            int rc = StorageTool.execute(new String[] {"format", "-t", args[1], "-c", config, "--ignore-formatted"}, System.out);
            if (rc != 0) {
                System.err.println("formatting " + home.resolve("data") + " failed (" + rc + ")");
                System.exit(1);
            }
        }
        exitWhenStdinCloses();
        kafka.Kafka.main(new String[] {config});
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
