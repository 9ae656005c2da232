// Pixelmed's DicomSRValidator on several files in one JVM (its command line takes one file per run).
//
// The validator compiles its 6 MB template stylesheets once (about 20 s of CPU) in its constructor; this driver
// makes one validator and calls its public validate(String filename) on each argument in turn, which is what
// DicomSRValidator.main does for its one file with the default options. Each file's report is framed by marker
// lines for tests/dicom_validators.py; an exception on one file is printed in its frame and the next file goes on.
import com.pixelmed.validate.DicomSRValidator;

public class BatchSRValidator {
    public static final String BEGIN = "=== dicomnode SR batch: begin ";
    public static final String END = "=== dicomnode SR batch: end ";

    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        int failed = 0;
        for (String path : args) {
            System.out.println(BEGIN + path);
            try {
                System.out.print(validator.validate(path));
            } catch (Exception e) {
                failed++;
                System.out.println();
                System.out.println("Exception: " + e);
            }
            System.out.println();
            System.out.println(END + path);
            System.out.flush();
        }
        System.exit(failed == 0 ? 0 : 2);
    }
}
